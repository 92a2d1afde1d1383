"""A search-cluster-like client: Predicts spread over every node's gRPC port, each with a 600 ms deadline.

``PredictLoop`` runs in a background thread (its own event loop, one persistent channel per node, as a
real client keeps them) so a synchronous test can start it, break things, and read the tally. Every
call counts: an RPC error, a missed deadline or an answer whose ``y`` does not match the answering
version (``y = version * x`` for tests.support.savedmodels models) is a failure.

Failures are split in two (issue 12): calls failed by the control plane (must be 0), and *cold* calls —
calls that missed their deadline while a node switched to a version that had just become AVAILABLE and
was paying TensorFlow's first-call cost (no warm-up records): a DEADLINE_EXCEEDED on a host at most
``COLD_WINDOW_SECONDS`` before that host's first answer from a version it had not answered with before.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from services.common.errors import TFServingError
from services.common.tfs import TFServingClient

SEARCH_DEADLINE_SECONDS = 0.6
COLD_WINDOW_SECONDS = 5.0
WARM_TIMEOUT_SECONDS = 10.0  # the uncounted first call per target that connects its channel


@dataclass(frozen=True)
class Failure:
    """One failed call: when (monotonic, relative to the loop's start), where and why."""

    at: float
    node: str
    code: str
    message: str


@dataclass
class PredictStats:
    """The tally of a loop so far."""

    total: int = 0
    failed: int = 0
    per_node: Counter[str] = field(default_factory=Counter)
    failed_per_node: Counter[str] = field(default_factory=Counter)
    versions: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    #: (host, version) → seconds after the loop's start of that host's first answer from that version.
    first_answer: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.total - self.failed

    def is_cold(self, failure: Failure) -> bool:
        """A deadline missed just before ``failure.node`` first answered from a version it switched to."""
        if failure.code != "DEADLINE_EXCEEDED":
            return False
        firsts = sorted(at for (host, _), at in self.first_answer.items() if host == failure.node)
        switches = firsts[1:]  # the host's very first version is no switch
        return any(0 <= at - failure.at <= COLD_WINDOW_SECONDS for at in switches)

    @property
    def cold(self) -> int:
        """Calls over the deadline on a version's first calls (TensorFlow's first-call cost)."""
        return sum(1 for f in self.failures if self.is_cold(f))

    @property
    def control_plane_failed(self) -> int:
        """Every other failed call: what the control plane must never cause."""
        return self.failed - self.cold

    def percentile(self, q: float) -> float:
        """Latency quantile in seconds (0 when nothing ran)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        """One line for logs and assertion messages (first failures included)."""
        rate = self.total / self.elapsed if self.elapsed else 0.0
        versions = {n: dict(c) for n, c in self.versions.items()}
        head = (
            f"{self.failed} failed ({self.cold} cold first calls over the deadline, {self.control_plane_failed} "
            f"other) of {self.total} Predicts in {self.elapsed:.1f}s ({rate:.0f}/s, "
            f"p50 {self.percentile(0.5) * 1000:.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms); "
            f"per node {dict(self.per_node)}; versions {versions}"
        )
        if self.failures:
            head += "; first failures: " + "; ".join(
                f"{f.node}@{f.at:.2f}s {f.code}: {f.message[:120]}" for f in self.failures[:5]
            )
        return head


class PredictLoop:
    """Round-robin Predicts over ``targets`` (hostname → ``host:port``) until stopped.

    ``rate`` caps the total calls per second (None = as fast as ``concurrency`` allows); keep it modest
    on a small machine so the client does not starve the fleet it measures.
    """

    def __init__(
        self,
        targets: Mapping[str, str],
        model: str,
        *,
        deadline: float = SEARCH_DEADLINE_SECONDS,
        concurrency: int = 8,
        rate: float | None = 200.0,
        label: str | None = None,
        x: float = 1.0,
    ) -> None:
        if not targets:
            raise ValueError("no targets")
        self.targets = dict(targets)
        self.model = model
        self.deadline = deadline
        self.concurrency = concurrency
        self.rate = rate
        self.label = label
        self.x = x
        self.stats = PredictStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._error: BaseException | None = None
        self._ready = threading.Event()

    # -- control -----------------------------------------------------------------------------------
    def start(self) -> PredictLoop:
        """Connect to every target first (one uncounted call each, as a search client's long-lived channels
        are connected before any search), then count from here on."""
        self._stop.clear()
        self._ready.clear()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="predict-loop", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=WARM_TIMEOUT_SECONDS * 2)
        return self

    def stop(self) -> PredictStats:
        """Stop and return the final tally (raises if the loop itself crashed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._error is not None:
            raise RuntimeError("predict loop crashed") from self._error
        return self.snapshot()

    def snapshot(self) -> PredictStats:
        """A copy of the tally so far."""
        with self._lock:
            s = self.stats
            return PredictStats(
                total=s.total,
                failed=s.failed,
                per_node=Counter(s.per_node),
                failed_per_node=Counter(s.failed_per_node),
                versions={n: Counter(c) for n, c in s.versions.items()},
                failures=list(s.failures),
                latencies=list(s.latencies),
                first_answer=dict(s.first_answer),
                elapsed=time.monotonic() - self._started,
            )

    def wait_total(self, count: int, *, timeout: float) -> PredictStats:
        """Block until at least ``count`` calls were made (bounded)."""
        deadline = time.monotonic() + timeout
        while self.snapshot().total < count:
            if time.monotonic() > deadline or self._error is not None:
                break
            time.sleep(0.1)
        return self.snapshot()

    def wait_answered(self, host: str, version: int, *, timeout: float) -> bool:
        """Block (bounded) until ``host`` has answered at least one call from ``version``: a test that has
        just seen the version become AVAILABLE cannot assume the loop has called it since."""
        deadline = time.monotonic() + timeout
        while self.snapshot().versions.get(host, Counter())[version] == 0:
            if time.monotonic() > deadline or self._error is not None:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> PredictLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        clients = {host: TFServingClient(target) for host, target in self.targets.items()}
        try:
            await asyncio.gather(*(self._connect(client) for client in clients.values()))
            self._started = time.monotonic()
            self._ready.set()
            hosts = list(clients)
            await asyncio.gather(*(self._worker(i, hosts, clients) for i in range(self.concurrency)))
        finally:
            for client in clients.values():
                await client.close()

    async def _connect(self, client: TFServingClient) -> None:
        """One call that is not counted: the channel is connected (a target down now is not waited for)."""
        with contextlib.suppress(Exception):
            await client.predict(self.model, {"x": ([self.x], (1, 1))}, label=self.label, timeout=WARM_TIMEOUT_SECONDS)

    async def _worker(self, index: int, hosts: list[str], clients: Mapping[str, TFServingClient]) -> None:
        period = self.concurrency / self.rate if self.rate else 0.0
        next_at = time.monotonic() + period * index / self.concurrency
        turn = index
        while not self._stop.is_set():
            if period:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + period, time.monotonic() - period)
            host = hosts[turn % len(hosts)]
            turn += 1
            await self._one(host, clients[host])

    async def _one(self, host: str, client: TFServingClient) -> None:
        began = time.monotonic()
        failure: tuple[str, str] | None = None
        version = None
        try:
            result = await client.predict(
                self.model, {"x": ([self.x], (1, 1))}, label=self.label, timeout=self.deadline
            )
        except TFServingError as exc:
            failure = (exc.code, str(exc))
        except Exception as exc:  # any other breakage is a failed search call too
            failure = (type(exc).__name__, str(exc))
        else:
            version = result.version
            y = result.outputs.get("y", [float("nan")])[0]
            if abs(y - version * self.x) > 1e-3 * max(1.0, abs(version * self.x)):
                failure = ("WRONG_ANSWER", f"version {version} answered y={y}")
        elapsed = time.monotonic() - began
        with self._lock:
            s = self.stats
            s.total += 1
            s.per_node[host] += 1
            s.latencies.append(elapsed)
            if failure is not None:
                s.failed += 1
                s.failed_per_node[host] += 1
                if len(s.failures) < 1000:
                    s.failures.append(Failure(began - self._started, host, failure[0], failure[1]))
            elif version is not None:
                s.versions.setdefault(host, Counter())[version] += 1
                s.first_answer.setdefault((host, version), time.monotonic() - self._started)


@contextlib.contextmanager
def predicting(targets: Mapping[str, str], model: str, **kwargs: object) -> Iterator[PredictLoop]:
    """``with predicting({...}, "m") as loop:`` — started on entry, stopped on exit (tally in ``loop.stats``)."""
    loop = PredictLoop(targets, model, **kwargs)  # type: ignore[arg-type]
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()
