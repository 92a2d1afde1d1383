"""config_manager's event loop never blocks on the disk: health and status answer while GC deletes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.config_manager.status import build_status
from tests.config_manager.conftest import Node, target

pytestmark = pytest.mark.slow


async def test_status_answers_while_gc_removes_a_large_version(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1, padding_bytes=64 << 20)
    node.desire(m=target([1]))
    assert await reconciler.run_now(), reconciler.last_error

    # A slow volume: removing v1 takes until the test says so (at most 30 s).
    entered, release = threading.Event(), threading.Event()
    remove = reconciler.gc.remove_version

    def slow_remove(model: str, version: int) -> None:
        entered.set()
        if not release.wait(30):
            raise RuntimeError("the event loop was blocked for the whole removal")
        remove(model, version)

    reconciler.gc.remove_version = slow_remove  # type: ignore[method-assign]
    node.add_version("m", 2)
    node.desire(m=target([2]))
    for _ in range(20):  # v1 is collected once tfserving has unloaded it (a pass or two)
        pass_task = asyncio.create_task(reconciler.run_now())
        while not entered.is_set() and not pass_task.done():  # runs only while the loop is free
            await asyncio.sleep(0.02)
        if entered.is_set():
            break
        assert await pass_task, reconciler.last_error
        await asyncio.sleep(0.5)  # tfserving unloads v1 at its next file-system poll
    assert entered.is_set() and not pass_task.done(), reconciler.last_error
    status = build_status(reconciler, hostname="node", software_version="test")  # what GET /v1/status serves
    assert status.syncing and status.models["m"].available == [2]
    release.set()
    assert await pass_task, reconciler.last_error
    assert not (node.root / "m" / "1").exists()
