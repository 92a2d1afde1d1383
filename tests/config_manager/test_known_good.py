"""models.config on disk is always known good: it names only versions AVAILABLE now, so a tfserving that
dies while loading a candidate (crash, OOM kill, node reboot) comes back serving the last good version.
A candidate is re-applied once the server answers; one during whose load the server dies twice is
recorded failed, so a version that kills the process cannot crash-loop a node.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from services.common.contracts.local import failed_path
from services.common.tfs import TFServingClient, VersionState, parse_config
from services.config_manager.live import GRPC_OPTIONS
from services.config_manager.reconciler import Reconciler
from tests.config_manager.conftest import Node, make_node, target

pytestmark = pytest.mark.slow

SLOW = {"local_only_load_delay_seconds": 3}
BIG = 20 << 20


def _file_versions(node: Node, model: str = "m") -> list[tuple[int, ...]]:
    return [e.versions for e in parse_config(node.config_file.read_text()) if e.name == model]


async def _state(node: Node, model: str, version: int) -> VersionState | None:
    try:
        async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
            statuses = await client.get_model_status(model, timeout=3)
    except Exception:
        return None
    return next((s.state for s in statuses if s.version == version), None)


async def _answer(node: Node) -> int:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        return (await client.predict("m", {"x": ([1.0], (1, 1))}, timeout=5)).version


async def _loading_candidate(node: Node, reconciler: Reconciler, version: int) -> asyncio.Task[bool]:
    """Start a pass that applies ``version`` and return once tfserving is LOADING it; the file must not
    name it meanwhile."""
    task = asyncio.create_task(reconciler.run_now())
    deadline = time.monotonic() + 60
    while await _state(node, "m", version) != VersionState.LOADING:
        assert time.monotonic() < deadline and not task.done(), reconciler.last_error
        await asyncio.sleep(0.05)
    assert all(version not in versions for versions in _file_versions(node)), node.config_file.read_text()
    return task


async def _restart_serving(node: Node, task: asyncio.Task[bool], **flags: object) -> None:
    """kill -9 tfserving (what a crash or an OOM kill does) and start it again from the file on disk."""
    node.stop_serving()
    await task  # the pass ends (tfserving unreachable); nothing is written meanwhile
    await asyncio.to_thread(node.start_serving, **flags)


async def _passes_until(reconciler: Reconciler, done: object, *, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not await done():  # type: ignore[operator]
        assert time.monotonic() < deadline, (reconciler.last_error, reconciler.snapshot.failed)
        await reconciler.run_now()
        await asyncio.sleep(0.3)


async def test_tfserving_killed_while_a_corrupt_candidate_loads_comes_back_serving_the_last_good(
    tmp_path: Path,
) -> None:
    async with make_node(tmp_path) as node:  # the stack's flags: 3 attempts 5 s apart, ~10 s of LOADING
        reconciler = node.reconciler(load_wait_seconds=30)
        node.add_version("m", 1)
        node.desire(m=target([1], labels={"stable": 1}))
        assert await reconciler.run_now(), reconciler.last_error
        node.add_version("m", 2, corrupt=True)
        node.desire(m=target([2], labels={"stable": 2}))
        task = await _loading_candidate(node, reconciler, 2)
        await _restart_serving(node, task)
        # Back from the known-good file: v1 serves (label too) before config_manager did anything.
        assert await _answer(node) == 1
        assert _file_versions(node) == [(1,)]

        async def v2_failed() -> bool:
            return "m" in reconciler.snapshot.failed and 2 in reconciler.snapshot.failed["m"]

        await _passes_until(reconciler, v2_failed)  # re-applied once, failed on its own bytes
        (entry,) = json.loads(failed_path(node.root).read_text())["versions"]
        assert entry["error_code"] == "DATA_LOSS", entry
        assert _file_versions(node) == [(1,)] and await _answer(node) == 1


async def test_tfserving_killed_while_a_slow_20mb_candidate_loads_reapplies_it_and_twice_records_it_failed(
    tmp_path: Path,
) -> None:
    async with make_node(tmp_path, **SLOW) as node:
        reconciler = node.reconciler(load_wait_seconds=30)
        node.add_version("m", 1, padding_bytes=BIG)
        node.desire(m=target([1]))
        assert await reconciler.run_now(), reconciler.last_error

        # Killed once while v2 loads: back on v1 at once, v2 re-applied and the roll completes.
        node.add_version("m", 2, padding_bytes=BIG)
        node.desire(m=target([2]))
        task = await _loading_candidate(node, reconciler, 2)
        await _restart_serving(node, task, **SLOW)
        assert await _answer(node) == 1 and _file_versions(node) == [(1,)]

        async def rolled_to_2() -> bool:
            return _file_versions(node) == [(2,)] and await _state(node, "m", 1) == VersionState.END

        await _passes_until(reconciler, rolled_to_2)
        assert await _answer(node) == 2

        # A version during whose load tfserving dies twice is recorded failed, not re-applied a third time.
        node.add_version("m", 3, padding_bytes=BIG)
        node.desire(m=target([3]))
        for _ in range(2):
            task = await _loading_candidate(node, reconciler, 3)
            await _restart_serving(node, task, **SLOW)
            assert await _answer(node) == 2

        async def v3_failed() -> bool:
            return 3 in reconciler.snapshot.failed.get("m", {})

        await _passes_until(reconciler, v3_failed)
        assert "server died while loading" in reconciler.snapshot.failed["m"][3]
        for _ in range(3):
            assert await reconciler.run_now(), reconciler.last_error
        assert _file_versions(node) == [(2,)] and await _state(node, "m", 3) is None
        assert await _answer(node) == 2
