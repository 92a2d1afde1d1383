"""Periodic workers: a small class with ``async def run_once()``, run on an interval with jitter.

The base logs and counts failures, backs off after errors, stops cleanly on shutdown and accepts
external "run now" triggers (optionally naming what to look at, e.g. one model), so a sync loop can be
driven by a timer, an API call or, later, a bucket notification.

It also keeps the monotonic timestamps the health checks read (:mod:`services.common.health`): when
the loop started, when the current pass started, when the last pass finished (successfully or not)
and when the pass in progress last reported progress (:meth:`PeriodicWorker.note_progress`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod

logger = logging.getLogger(__name__)


class PeriodicWorker(ABC):
    """Run :meth:`run_once` every ``interval`` seconds (± ``jitter`` fraction) until stopped."""

    name: str = "worker"

    def __init__(self, *, interval: float, jitter: float = 0.1, max_backoff: float | None = None) -> None:
        self.interval = interval
        self.jitter = jitter
        self.max_backoff = max_backoff if max_backoff is not None else interval
        self.runs = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.last_run_at: float | None = None
        self.running = False
        #: Monotonic seconds: loop start, current pass start, last pass end (any outcome), last progress.
        self.loop_started_at: float | None = None
        self.pass_started_at: float | None = None
        self.pass_finished_at: float | None = None
        self._progress_at: float | None = None
        self._wake = asyncio.Event()
        self._pending: set[str] = set()
        self._full_pending = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @abstractmethod
    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """Do one pass. ``targets`` names what triggered it (e.g. models); None means everything."""

    def note_progress(self) -> None:
        """Record that the pass in progress is still moving (a step done, bytes arrived); a long pass
        that calls this is slow, not stuck. Safe to call from worker threads (one float store)."""
        self._progress_at = time.monotonic()

    def progress_at(self) -> float | None:
        """Monotonic time of the latest sign of life of the current pass (its start at the least)."""
        return self._progress_at

    @property
    def started(self) -> bool:
        """The loop was started (and not stopped since)."""
        return self._task is not None

    @property
    def loop_alive(self) -> bool:
        """The loop task exists and has not ended (it ends only on stop, or by a bug)."""
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def trigger(self, target: str | None = None) -> None:
        """Ask for a pass as soon as possible; ``target`` narrows it (None = a full pass)."""
        if target is None:
            self._full_pending = True
        else:
            self._pending.add(target)
        self._wake.set()

    def start(self) -> None:
        """Start the loop as a task owned by this worker (awaited in :meth:`stop`)."""
        if self._task is None:
            self._stopping = False
            self.loop_started_at = time.monotonic()
            self._task = asyncio.create_task(self._loop(), name=f"worker:{self.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop; a pass in progress is cancelled after ``grace`` seconds."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        if task.done():  # the loop ended by itself (a bug: /healthz showed "worker loop ended")
            if not task.cancelled() and task.exception() is not None:
                logger.error("%s loop had ended: %r", self.name, task.exception())
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_now(self, targets: frozenset[str] | None = None) -> bool:
        """Run one pass inline (tests, CLIs); returns True on success."""
        return await self._run_pass(targets)

    def _next_delay(self) -> float:
        base = self.interval
        if self.consecutive_failures:
            base = min(self.max_backoff, 2.0 ** min(self.consecutive_failures, 10))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    async def _run_pass(self, targets: frozenset[str] | None) -> bool:
        self.running = True
        self.last_run_at = time.time()
        started = self.pass_started_at = self._progress_at = time.monotonic()
        try:
            await self.run_once(targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            self.consecutive_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception(
                "%s pass failed", self.name, extra={"worker": self.name, "failures": self.consecutive_failures}
            )
            return False
        else:
            self.consecutive_failures = 0
            self.last_error = None
            self.last_success_at = time.time()
            logger.debug("%s pass done in %.3fs", self.name, time.monotonic() - started)
            return True
        finally:
            self.runs += 1
            self.pass_finished_at = time.monotonic()
            self.running = False

    async def _loop(self) -> None:
        while not self._stopping:
            targets: frozenset[str] | None = None
            if self._pending and not self._full_pending and self.runs > 0:
                targets = frozenset(self._pending)
            self._pending.clear()
            self._full_pending = False
            self._wake.clear()
            await self._run_pass(targets)
            if self._stopping:
                break
            if self._pending or self._full_pending:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_delay())
