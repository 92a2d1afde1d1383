"""config_manager under production conditions: the stack's tfserving flags (read from swarm-deploy.yml), a
model that takes 5 s to load with 20 MB of variables, no automatic warm-up, a memory budget.

local_serving's local-only flags stand in for what production has and a laptop lacks:
``--local_only_load_delay_seconds`` (a big model's load time) and ``--local_only_memory_budget_bytes``
(GPU memory: a version costs the bytes of its variables; a load that does not fit ends RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from services.common.contracts.local import failed_path
from services.common.tfs import TFServingClient, VersionState, parse_config
from services.config_manager.live import GRPC_OPTIONS
from services.config_manager.status import build_status
from tests.config_manager.conftest import Node, make_node, target
from tests.support.predict_loop import PredictStats, predicting

pytestmark = pytest.mark.slow

LOAD_SECONDS = 5
BIG = 20 << 20  # bytes of variables of a "big" version


async def _answered(node: Node, model: str) -> int:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        result = await client.predict(model, {"x": ([1.0], (1, 1))}, timeout=5)
    return result.version


async def test_roll_of_a_slow_20mb_model_under_search_load_fails_no_call(tmp_path: Path) -> None:
    async with make_node(tmp_path, local_only_load_delay_seconds=LOAD_SECONDS) as node:
        reconciler = node.reconciler(load_wait_seconds=60)
        node.add_version("m", 1, padding_bytes=BIG)
        node.desire(m=target([1], labels={"stable": 1}))
        assert await reconciler.run_now(), reconciler.last_error
        hosts = {"node": node.target}
        with predicting(hosts, "m", rate=100.0) as latest, predicting(hosts, "m", rate=100.0, label="stable") as stable:
            for version in (2, 3):
                node.add_version("m", version, padding_bytes=BIG)
                node.desire(m=target([version], labels={"stable": version}))
                started = time.monotonic()
                assert await reconciler.run_now(), reconciler.last_error
                assert time.monotonic() - started >= LOAD_SECONDS  # the load really was slow
                assert await asyncio.to_thread(latest.wait_answered, "node", version, timeout=15)
                assert await asyncio.to_thread(stable.wait_answered, "node", version, timeout=15)
            results: list[PredictStats] = [latest.snapshot(), stable.snapshot()]
        entries = parse_config(node.config_file.read_text())
        assert [(e.versions, e.labels) for e in entries] == [((3,), {"stable": 3})]
    for stats in results:
        print("slow 20 MB roll:", stats.summary())  # the cold first-call figures, for the record
        assert stats.total > 100
        assert stats.control_plane_failed == 0, stats.summary()
        assert set(stats.versions["node"]) == {1, 2, 3}, stats.summary()


async def test_a_version_that_does_not_fit_waits_for_memory_and_loads_once_memory_frees(tmp_path: Path) -> None:
    # Room for two big versions, not three: m v1 + other v1 fill it, m v2 cannot load beside m v1.
    budget = 2 * BIG + BIG // 2
    async with make_node(tmp_path, local_only_memory_budget_bytes=budget) as node:
        reconciler = node.reconciler(load_wait_seconds=40)
        node.add_version("m", 1, padding_bytes=BIG)
        node.add_version("other", 1, padding_bytes=BIG)
        node.desire(m=target([1]), other=target([1]))
        assert await reconciler.run_now(), reconciler.last_error

        node.add_version("m", 2, padding_bytes=BIG)
        node.desire(m=target([2]), other=target([1]))
        assert await reconciler.run_now(), reconciler.last_error
        # Out of memory is not corruption: v1 keeps serving, v2 waits for memory, failed.json stays clean.
        assert await _answered(node, "m") == 1
        status = build_status(reconciler, hostname="node", software_version="test")
        (shortfall,) = status.models["m"].capacity
        assert shortfall.version == 2 and shortfall.bytes_needed >= BIG
        assert "RESOURCE_EXHAUSTED" in shortfall.message or "memory" in shortfall.message.lower()
        assert status.models["m"].failed == {}
        assert [a.kind for a in status.alarms] == ["capacity"]
        assert not failed_path(node.root).exists() or '"2"' not in failed_path(node.root).read_text()
        assert reconciler.metrics.capacity_waiting._value.get() == 1
        assert [e.versions for e in parse_config(node.config_file.read_text()) if e.name == "m"] == [(1,)]

        # The operator retires the other model: its memory frees, v2 is tried again and takes over.
        node.desire(m=target([2]), other=target([], enabled=False))
        deadline = time.monotonic() + 90
        while True:
            assert await reconciler.run_now(), reconciler.last_error
            live = reconciler.snapshot.live.get("m") or []
            if [s.version for s in live if s.state == VersionState.AVAILABLE] == [2]:
                break
            assert time.monotonic() < deadline, reconciler.snapshot.live
            await asyncio.sleep(0.5)
        assert await _answered(node, "m") == 2
        status = build_status(reconciler, hostname="node", software_version="test")
        assert status.models["m"].capacity == [] and status.alarms == []


async def test_a_retired_model_that_comes_back_is_loaded_as_a_new_name(tmp_path: Path) -> None:
    # TF Serving blocks a reload until a name new to its config loads, although GetModelStatus still lists
    # the retired model's versions (END): that reload's deadline is expected, not an error.
    async with make_node(tmp_path, local_only_load_delay_seconds=LOAD_SECONDS) as node:
        reconciler = node.reconciler(reload_timeout_seconds=1.0, load_wait_seconds=30)
        node.add_version("m", 1)
        node.desire(m=target([1]))
        assert await reconciler.run_now(), reconciler.last_error
        node.desire(m=target([1], enabled=False))
        assert await reconciler.run_now(), reconciler.last_error
        assert parse_config(node.config_file.read_text()) == []
        node.desire(m=target([1]))
        assert await reconciler.run_now(), reconciler.last_error
        assert reconciler.snapshot.last_reload_result == "deadline"
        assert await _answered(node, "m") == 1


async def _state_of(node: Node, model: str, version: int) -> tuple[VersionState, int] | None:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        for status in await client.get_model_status(model, timeout=5):
            if status.version == version:
                return status.state, status.error_code
    return None


async def _until(node: Node, model: str, version: int, wanted: VersionState, *, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (found := await _state_of(node, model, version)) is None or found[0] != wanted:
        assert time.monotonic() < deadline, f"{model} v{version} never {wanted.name}; last {found}"
        await asyncio.sleep(0.1)
    return found[1]


async def test_fixed_bytes_of_a_failed_version_load_although_the_server_was_busy_loading(tmp_path: Path) -> None:
    # TF Serving loads inline on its manager thread and keeps only the newest update per model meanwhile.
    # While model "a" loads (6 s), m's failed v2 leaves the config and its fixed bytes arrive: re-adding v2
    # before the busy server processed the removal would merge it away (v2 never retried) and leave v2's
    # old error listed beyond any fixed grace (v2 recorded failed again, with its *new* bytes).
    # One load attempt (not the stack's 3) keeps the test short; retries only lengthen the busy window.
    async with make_node(tmp_path, local_only_load_delay_seconds=6, max_num_load_retries=0) as node:
        reconciler = node.reconciler(load_wait_seconds=0.3)  # passes return while loads run

        async def run() -> None:
            assert await reconciler.run_now(), reconciler.last_error

        node.add_version("m", 1)
        node.add_version("a", 1)
        node.desire(m=target([1]), a=target([1]))
        await run()
        await _until(node, "m", 1, VersionState.AVAILABLE)
        await _until(node, "a", 1, VersionState.AVAILABLE)

        node.add_version("m", 2, corrupt=True)
        node.desire(m=target([2]), a=target([1]))
        await run()
        await _until(node, "m", 2, VersionState.LOADING)
        node.add_version("a", 2)
        node.desire(m=target([2]), a=target([2]))
        await run()  # a v2 queues behind m v2's load
        assert await _until(node, "m", 2, VersionState.END) != 0
        await _until(node, "a", 2, VersionState.LOADING, timeout=5)
        await run()  # records m v2 failed and takes it out of the config while a v2 loads
        assert '"version": 2' in failed_path(node.root).read_text()
        assert await _state_of(node, "a", 2) == (VersionState.LOADING, 0), "the server must be busy here"

        shutil.rmtree(node.root / "m" / "2")
        node.add_version("m", 2)  # the ML engineer re-uploads v2, fixed
        deadline = time.monotonic() + 90
        while (await _state_of(node, "m", 2) or (None, 0))[0] != VersionState.AVAILABLE:
            assert time.monotonic() < deadline, reconciler.snapshot.failed
            await run()
            await asyncio.sleep(0.5)
        assert reconciler.snapshot.failed.get("m", {}) == {}
        while [e.versions for e in parse_config(node.config_file.read_text()) if e.name == "m"] != [(2,)]:
            assert time.monotonic() < deadline
            await run()
            await asyncio.sleep(0.2)
        assert await _answered(node, "m") == 2
