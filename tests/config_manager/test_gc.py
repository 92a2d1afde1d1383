"""GC against a real local_serving: frees disk, never touches what serves; low-disk mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from services.common.atomic import atomic_write_json
from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_intent_path, manifest_path
from services.common.tfs import TFServingClient, parse_config
from services.config_manager.live import GRPC_OPTIONS
from services.config_manager.localdisk import trash_dir
from services.config_manager.reconciler import Reconciler
from services.config_manager.status import build_status
from tests.config_manager.conftest import Node, predict_loop, target

pytestmark = pytest.mark.slow


async def passes_until(reconciler: Reconciler, condition: Callable[[], bool], timeout: float = 20) -> bool:
    """Run reconcile passes (as the interval would) until ``condition`` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert await reconciler.run_now(), reconciler.last_error
        if condition():
            return True
        await asyncio.sleep(0.3)
    return False


def on_disk(node: Node, model: str) -> list[int]:
    return sorted(int(p.name) for p in (node.root / model).iterdir() if p.name.isdigit())


async def test_gc_keeps_served_and_kept_versions_and_low_disk_drops_kept_ones(node: Node) -> None:
    reconciler = node.reconciler(low_disk_free_bytes=1000)
    node.add_version("m", 1)
    node.desire(m=target([1]))
    assert await reconciler.run_now()
    async with predict_loop(node, "m") as latest:
        node.add_version("m", 2)
        node.desire(m=target([2], keep=[1, 2]))
        assert await reconciler.run_now()
        assert on_disk(node, "m") == [1, 2]  # 1 is kept for a fast rollback
        assert await latest.reached(2), latest.versions

        node.add_version("m", 3)
        node.desire(m=target([3], keep=[2, 3]))
        assert await passes_until(reconciler, lambda: on_disk(node, "m") == [2, 3])
        assert not manifest_path(node.root, "m", 1).exists()
        assert list(trash_dir(node.root).iterdir()) == []
        assert await latest.reached(3), latest.versions

        # The disk fills up: kept-but-not-served versions go, what serves stays.
        node.free_space = lambda path: 10
        assert await reconciler.run_now()
        # 2 goes only once tfserving has unloaded it (its file-system poll runs every second).
        assert await passes_until(reconciler, lambda: on_disk(node, "m") == [3])
    assert latest.failures == []
    assert latest.versions == [1, 2, 3]
    status = build_status(reconciler, hostname="n1", software_version="t")
    assert status.details["low_disk"] is True
    assert any(a.kind == "low-disk" for a in status.alarms)  # still short: nothing serving is removed
    assert [e.versions for e in parse_config(node.config_file.read_text())] == [(3,)]
    assert b"modelfleet_config_manager_low_disk 1.0" in _metrics(reconciler)
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        result = await client.predict("m", {"x": ([1.0], (1, 1))}, timeout=5)
    assert round(result.outputs["y"][0]) == 3


async def test_gc_leaves_a_model_missing_from_desired_json_alone(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("a", 1)
    node.add_version("b", 1)
    node.desire(a=target([1]), b=target([1]))
    assert await reconciler.run_now()
    node.add_version("b", 2)
    node.desire(a=target([1]))  # b vanished from desired.json (e.g. a bad listing upstream)
    assert await reconciler.run_now()
    assert on_disk(node, "b") == [1, 2]
    assert [(e.name, e.versions) for e in parse_config(node.config_file.read_text())] == [("a", (1,)), ("b", (1,))]
    node.desire(a=target([1]), b=target([], enabled=False))  # retired on purpose
    assert await reconciler.run_now()
    assert [e.name for e in parse_config(node.config_file.read_text())] == ["a"]
    assert await passes_until(reconciler, lambda: on_disk(node, "b") == [])


def _metrics(reconciler: object) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(reconciler.metrics.registry)  # type: ignore[attr-defined]


async def test_a_version_installed_for_the_pullers_next_desired_json_is_never_collected(node: Node) -> None:
    # The puller is in the middle of a long pass: v2 is installed for a desired.json it has not written
    # yet. Its intent (desired.next.json, written before any install) keeps v2 however long that takes.
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1]))
    assert await reconciler.run_now(), reconciler.last_error
    atomic_write_json(desired_intent_path(node.root), LocalDesired(models={"m": target([2])}))
    node.add_version("m", 2)
    for _ in range(3):
        assert await reconciler.run_now(), reconciler.last_error
        await asyncio.sleep(0.3)
    assert (node.root / "m" / "2").is_dir()
    assert [e.versions for e in parse_config(node.config_file.read_text())] == [(1,)]
    # Without the intent nothing serves or keeps v2: it goes (what the intent prevented above).
    desired_intent_path(node.root).unlink()
    assert await reconciler.run_now(), reconciler.last_error
    assert not (node.root / "m" / "2").exists()
