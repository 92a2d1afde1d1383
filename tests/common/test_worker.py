"""The periodic-worker base: interval, triggers, failure counting with backoff, clean stop."""

from __future__ import annotations

import asyncio

from services.common.worker import PeriodicWorker


class Recorder(PeriodicWorker):
    name = "recorder"

    def __init__(self, *, fail_times: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.calls: list[frozenset[str] | None] = []
        self.fail_times = fail_times

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        self.calls.append(targets)
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("bucket unreachable")


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_runs_on_interval_and_stops_cleanly() -> None:
    worker = Recorder(interval=0.05, jitter=0.0)
    worker.start()
    await wait_for(lambda: len(worker.calls) >= 3)
    await worker.stop()
    count = len(worker.calls)
    await asyncio.sleep(0.15)
    assert len(worker.calls) == count
    assert worker.failures == 0 and worker.last_success_at is not None


async def test_trigger_runs_now_and_names_targets() -> None:
    worker = Recorder(interval=3600, jitter=0.0)
    worker.start()
    await wait_for(lambda: len(worker.calls) == 1)  # the first pass is always full
    worker.trigger("ranker")
    worker.trigger("embedder")
    await wait_for(lambda: len(worker.calls) == 2)
    assert worker.calls[1] == frozenset({"ranker", "embedder"})
    worker.trigger()
    await wait_for(lambda: len(worker.calls) == 3)
    assert worker.calls[2] is None
    await worker.stop()


async def test_failures_are_counted_and_reset_by_success() -> None:
    worker = Recorder(interval=0.01, jitter=0.0, fail_times=2, max_backoff=0.02)
    worker.start()
    await wait_for(lambda: worker.last_success_at is not None)
    await worker.stop()
    assert worker.failures == 2
    assert worker.consecutive_failures == 0 and worker.last_error is None


async def test_stop_cancels_a_stuck_pass_after_grace() -> None:
    class Stuck(PeriodicWorker):
        async def run_once(self, targets=None) -> None:
            await asyncio.sleep(3600)

    worker = Stuck(interval=1)
    worker.start()
    await asyncio.sleep(0.05)
    async with asyncio.timeout(2):
        await worker.stop(grace=0.1)
