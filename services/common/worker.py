"""Periodic workers: a small class with ``async def run_once()``, run on an interval with jitter.

The base logs and counts failures, backs off after errors, stops cleanly on shutdown and accepts
external "run now" triggers (optionally naming what to look at, e.g. one model), so a sync loop can be
driven by a timer, an API call or, later, a bucket notification.
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
        self._wake = asyncio.Event()
        self._pending: set[str] = set()
        self._full_pending = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @abstractmethod
    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """Do one pass. ``targets`` names what triggered it (e.g. models); None means everything."""

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
            self._task = asyncio.create_task(self._loop(), name=f"worker:{self.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop; a pass in progress is cancelled after ``grace`` seconds."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
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
        started = time.monotonic()
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
