"""Health polling of every registered sidecar's ``GET /v1/status``, debounced.

- Every sidecar is polled concurrently through a bounded pool, each with a deadline of
  ``node_timeout_seconds`` (covering the wait for a pool slot, the connection and the whole answer).
- Debounce (DESIGN.md, reference commit): a sidecar turns unhealthy only after
  ``FAILURE_THRESHOLD`` consecutive failed polls; any successful poll resets the count and makes it
  healthy; a sidecar never seen healthy stays unhealthy (the counter only shields a healthy one).
- Polls are deduplicated per sidecar: a ``?refresh=true`` arriving while a sidecar is being polled
  waits for that poll instead of starting a second one (which would double-count failures), so any
  pass still answers within about one node timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from services.common.contracts import SidecarStatus
from services.common.worker import PeriodicWorker
from services.master.registry import Registry, SidecarRecord
from services.master.wire import SidecarClient, WireError

logger = logging.getLogger(__name__)

FAILURE_THRESHOLD = 3
STATUS_PATH = "/v1/status"


@dataclass
class SidecarHealth:
    """Poll results of one sidecar, keyed by (hostname, role)."""

    healthy: bool = False
    ever_healthy: bool = False
    consecutive_failures: int = 0
    polls: int = 0
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_duration_seconds: float | None = None
    status: SidecarStatus | None = None

    def record_success(self, status: SidecarStatus, *, at: float, duration: float) -> None:
        """Any success resets the failure count and makes the sidecar healthy."""
        self.polls += 1
        self.healthy = True
        self.ever_healthy = True
        self.consecutive_failures = 0
        self.last_poll_at = self.last_success_at = at
        self.last_error = None
        self.last_duration_seconds = duration
        self.status = status

    def record_failure(self, error: str, *, at: float, duration: float) -> None:
        """Unhealthy only once failures reach the threshold; the last good status is kept for the view."""
        self.polls += 1
        self.consecutive_failures += 1
        if self.consecutive_failures >= FAILURE_THRESHOLD:
            self.healthy = False
        self.last_poll_at = at
        self.last_error = error
        self.last_duration_seconds = duration


@dataclass
class PassSummary:
    """Outcome of one polling pass."""

    started_at: float
    finished_at: float
    polled: int
    failed: int


class Poller(PeriodicWorker):
    """Polls every sidecar in the registry; ``health`` holds the latest (debounced) results."""

    name = "poller"

    def __init__(
        self,
        registry: Registry,
        client: SidecarClient,
        *,
        interval: float,
        node_timeout: float,
        concurrency: int,
        on_result: Callable[[SidecarRecord, bool, float], None] | None = None,
    ) -> None:
        super().__init__(interval=interval, jitter=0.1, max_backoff=interval)
        self.registry = registry
        self.client = client
        self.node_timeout = node_timeout
        self.concurrency = concurrency
        self.health: dict[tuple[str, str], SidecarHealth] = {}
        self.last_pass: PassSummary | None = None
        self._on_result = on_result
        self._pool = asyncio.Semaphore(concurrency)
        self._inflight: dict[tuple[str, str], asyncio.Task[bool]] = {}

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """One pass (``targets`` = hostnames to poll; None = all); also drops long-silent sidecars."""
        for record in self.registry.prune():
            self.health.pop(record.key, None)
        if self.registry.dirty:
            await self.registry.save()
        await self.poll_all(targets)

    async def poll_all(self, targets: frozenset[str] | None = None) -> PassSummary:
        """Poll every sidecar (of ``targets`` hosts) now; returns within about one node timeout."""
        started = time.time()
        records = [r for r in self.registry.sidecars() if targets is None or r.hostname in targets]
        results = await asyncio.gather(*(asyncio.shield(self._poll_task(r)) for r in records))
        summary = PassSummary(
            started_at=started, finished_at=time.time(), polled=len(records), failed=sum(not ok for ok in results)
        )
        if targets is None:
            self.last_pass = summary
        if summary.failed:
            logger.info("poll pass: %s of %s sidecars failed", summary.failed, summary.polled)
        return summary

    async def close(self) -> None:
        """Cancel polls still in flight (shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _poll_task(self, record: SidecarRecord) -> asyncio.Task[bool]:
        """The poll of this sidecar in flight, or a new one."""
        task = self._inflight.get(record.key)
        if task is None or task.done():
            task = asyncio.create_task(self._poll_one(record), name=f"poll:{record.hostname}/{record.role}")
            self._inflight[record.key] = task
            task.add_done_callback(functools.partial(self._forget, record.key))
        return task

    def _forget(self, key: tuple[str, str], task: asyncio.Task[bool]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    def host_health(self, hostname: str) -> bool | None:
        """True when every registered sidecar of the node is healthy; None when the node is unknown."""
        records = self.registry.for_host(hostname)
        if not records:
            return None
        return all(self.health.get(r.key, SidecarHealth()).healthy for r in records)

    async def _poll_one(self, record: SidecarRecord) -> bool:
        health = self.health.setdefault(record.key, SidecarHealth())
        began = time.monotonic()
        try:
            status = await asyncio.wait_for(self._fetch(record), self.node_timeout)
        except TimeoutError:
            error = f"no answer within {self.node_timeout:g}s"
        except WireError as exc:
            error = str(exc)
        except (ValidationError, ValueError) as exc:
            error = f"invalid status payload: {exc.__class__.__name__}"
        else:
            health.record_success(status, at=time.time(), duration=time.monotonic() - began)
            self._report(record, True, began)
            return True
        was_healthy = health.healthy
        health.record_failure(error, at=time.time(), duration=time.monotonic() - began)
        if was_healthy and not health.healthy:
            logger.warning(
                "sidecar unhealthy after %s failed polls: %s",
                health.consecutive_failures,
                error,
                extra={"node": record.hostname, "role": record.role},
            )
        self._report(record, False, began)
        return False

    async def _fetch(self, record: SidecarRecord) -> SidecarStatus:
        async with self._pool:
            response = await self.client.request("GET", record.base_url + STATUS_PATH)
        if response.status != 200:
            raise WireError(f"HTTP {response.status}")
        status = SidecarStatus.model_validate_json(response.body)
        if (status.hostname, status.role) != record.key:
            raise ValueError(f"answered as {status.hostname}/{status.role}")
        return status

    def _report(self, record: SidecarRecord, ok: bool, began: float) -> None:
        if self._on_result is not None:
            self._on_result(record, ok, time.monotonic() - began)
