"""``GET /healthz``: is this process alive and making progress? (docs/architecture.md "Health checks")

Health answers one question, the one a restart can fix: is the process itself sound? It is never
"is the world fine": a pass that *fails* (bucket unreachable, tfserving down, master gone) still
completes, the loop goes on and retries, and restarting the sidecar would not bring the bucket back,
so a failing pass leaves health green (its error is in ``/v1/status`` and in the check's detail).
What turns health red is what a restart does fix:

- a **stale worker**: its loop has not finished a pass (successful or not) for longer than
  ``max(k * max(interval, max_backoff), FLEET_HEALTH_MIN_STALE_SECONDS)`` (the loop stopped scheduling
  passes), or the loop task ended;
- a **stuck worker**: the pass in progress has shown no progress (its start, a step, bytes arriving)
  for longer than ``max(k * interval, FLEET_HEALTH_STUCK_SECONDS)``;
- an **unwritable state dir** (``FLEET_STATE_DIR``): creating and deleting a small file there fails or
  does not finish within 2 s (probed off the event loop, the result reused for a few seconds).

k is ``FLEET_HEALTH_MISSED_PASSES`` (3). The event loop itself needs no check: the handler answering
at all proves it turns; when it does not, the Docker HEALTHCHECK times out, which counts as a failure.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import JSONResponse

from services.common.problems import problem_response
from services.common.settings import FleetSettings
from services.common.worker import PeriodicWorker

#: Longest wait for one write probe of the state dir before it counts as not writable.
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Check:
    """The outcome of one named check."""

    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class HealthBounds:
    """How long a worker may go without finishing a pass, or a pass without progress."""

    missed_passes: float = 3.0
    min_stale_seconds: float = 60.0
    stuck_seconds: float = 600.0

    @classmethod
    def from_settings(cls, settings: FleetSettings) -> HealthBounds:
        return cls(
            missed_passes=settings.health_missed_passes,
            min_stale_seconds=settings.health_min_stale_seconds,
            stuck_seconds=settings.health_stuck_seconds,
        )

    def stale_after(self, worker: PeriodicWorker) -> float:
        """Seconds without a finished pass before the worker is stale (backoff delays included)."""
        return max(self.missed_passes * max(worker.interval, worker.max_backoff), self.min_stale_seconds)

    def stuck_after(self, worker: PeriodicWorker) -> float:
        """Seconds a pass may go without progress before it is stuck."""
        return max(self.missed_passes * worker.interval, self.stuck_seconds)


def check_worker(worker: PeriodicWorker, bounds: HealthBounds, *, now: float | None = None) -> Check:
    """Alive and making progress: passes finish (with any outcome) and a running pass moves."""
    now = time.monotonic() if now is None else now
    if worker.stopping:
        return Check(True, "stopping")
    if not worker.started:
        return Check(True, "not started (passes are driven by hand)")
    if not worker.loop_alive:
        return Check(False, "worker loop ended: no more passes will run")
    if worker.running:
        started = worker.pass_started_at if worker.pass_started_at is not None else now
        moved = worker.progress_at() or started
        quiet, bound = now - moved, bounds.stuck_after(worker)
        if quiet > bound:
            return Check(
                False,
                f"worker stuck: pass running for {now - started:.1f} s, no progress for {quiet:.1f} s "
                f"(bound {bound:g} s)",
            )
        return Check(True, f"pass running for {now - started:.1f} s, last progress {quiet:.1f} s ago")
    finished = worker.pass_finished_at
    since = now - (finished if finished is not None else worker.loop_started_at or now)
    bound = bounds.stale_after(worker)
    if since > bound:
        what = "no pass finished since the loop started" if finished is None else "no pass finished"
        return Check(False, f"worker stale: {what} {since:.1f} s ago (bound {bound:g} s)")
    if finished is None:
        return Check(True, f"first pass not started yet ({since:.1f} s since start)")
    if worker.last_error is None:
        return Check(True, f"last pass finished {since:.1f} s ago: ok")
    # A failing pass is the world's problem (bucket, tfserving, master), not this process's.
    return Check(True, f"last pass finished {since:.1f} s ago: failed ({worker.last_error})")


class WritableDir:
    """Creates and deletes a small temp file in ``path`` off the event loop; the answer is reused for
    ``cache_seconds`` and at most one probe runs at a time (a hung file system costs one thread)."""

    def __init__(self, path: Path, *, cache_seconds: float = 5.0, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._result: Check | None = None
        self._at = 0.0
        # Awaited by this check or the next one (shielded, so a timed-out wait leaves it running).
        self._inflight: asyncio.Future[Check] | None = None

    async def check(self) -> Check:
        if self._result is not None and time.monotonic() - self._at < self.cache_seconds:
            return self._result
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._probe))
        try:
            result = await asyncio.wait_for(asyncio.shield(self._inflight), self.timeout)
        except TimeoutError:
            result = Check(False, f"{self.path} is not writable: a write probe did not finish in {self.timeout:g} s")
        self._result, self._at = result, time.monotonic()
        return result

    def _probe(self) -> Check:
        try:
            fd, name = tempfile.mkstemp(prefix=".healthz-", dir=self.path)
            try:
                os.write(fd, b"ok\n")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            return Check(False, f"{self.path} is not writable: {exc.strerror or exc}")
        return Check(True, f"{self.path} is writable")


CheckFunction = Callable[[], Awaitable[Check]]


class Health:
    """Named checks run in order by ``GET /healthz``; each must be cheap (no network calls)."""

    def __init__(self, bounds: HealthBounds) -> None:
        self.bounds = bounds
        self._checks: dict[str, CheckFunction] = {}

    def add(self, name: str, check: CheckFunction) -> None:
        self._checks[name] = check

    def add_worker(self, name: str, worker: PeriodicWorker) -> None:
        async def check() -> Check:
            return check_worker(worker, self.bounds)

        self.add(name, check)

    def add_writable(self, name: str, directory: WritableDir) -> None:
        self.add(name, directory.check)

    async def run(self) -> dict[str, Check]:
        return {name: await check() for name, check in self._checks.items()}


def node_health(settings: FleetSettings, workers: Mapping[str, PeriodicWorker | None]) -> Health:
    """A sidecar's checks: each worker (``None`` = not running in this process) and the state dir."""
    health = Health(HealthBounds.from_settings(settings))
    for name, worker in workers.items():
        if worker is not None:
            health.add_worker(name, worker)
    health.add_writable("state_dir", WritableDir(settings.state_dir, cache_seconds=settings.health_probe_cache_seconds))
    return health


def health_response(results: Mapping[str, Check], *, extra: Mapping[str, object] | None = None) -> JSONResponse:
    """200 ``{"status": "ok", "checks": {...}, **extra}``, or 503 problem+json naming the failed checks."""
    checks = {name: check.as_json() for name, check in results.items()}
    failed = [name for name, check in results.items() if not check.ok]
    headers = {"Cache-Control": "no-store"}
    if not failed:
        return JSONResponse({"status": "ok", "checks": checks, **(extra or {})}, headers=headers)
    return problem_response(
        status=503,
        slug="unhealthy",
        title="Unhealthy",
        detail="; ".join(f"{name}: {results[name].detail}" for name in failed),
        headers=headers,
        failed=failed,
        checks=checks,
    )
