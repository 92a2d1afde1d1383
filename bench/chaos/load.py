"""A search-like gRPC load: searches of 15-45 Predicts each, spread over every node, 600 ms per call.

As the search cluster does: one long-lived channel per node for the whole run, each search's calls
issued together (round-robin over the nodes from a random start, the models mixed), every call with a
600 ms deadline. Each call is recorded (start, latency, node, model, answer or error code) so failures
can be matched against what the chaos did to that node at that moment. An answer whose ``y`` is not
``version * x`` or that comes from a corrupt version is a failure too.

The client watches its own event loop: a pause of ``STALL_SECONDS`` or more (this process starved of
CPU on a loaded machine, a garbage collection) is recorded, so a call that missed its deadline while
the client itself could not run is told apart from one a server failed.

The channels reconnect with a short backoff (200 ms, at most 1 s): gRPC's default backoff (up to
120 s) would keep a client failing long after a restarted server is back, which measures gRPC, not us.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.common.errors import TFServingError
from services.common.tfs import TFServingClient

CALL_DEADLINE_SECONDS = 0.6
CALLS_PER_SEARCH = (15, 45)
KILLSWITCH_FAILED_FRACTION = 0.25
STALL_SECONDS = 0.15
LAG_PROBE_SECONDS = 0.05
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class Call:
    """One Predict: ``start`` in seconds since the run's clock zero, ``code`` None when it succeeded."""

    start: float
    latency: float
    node: str
    model: str
    code: str | None
    version: int | None = None
    detail: str = ""

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass
class SearchTally:
    searches: int = 0
    tripped: int = 0  # searches with more than KILLSWITCH_FAILED_FRACTION of their calls failed
    calls: list[Call] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds) the client could not run


class SearchLoad:
    """Runs searches at ``rate`` per second in a background thread until stopped."""

    def __init__(
        self,
        targets: Mapping[str, str],
        models: Sequence[str],
        *,
        rate: float,
        clock_zero: float,
        seed: int,
        corrupt: set[tuple[str, int]],
    ) -> None:
        self.targets = dict(targets)
        self.models = list(models)
        self.rate = rate
        self.clock_zero = clock_zero
        self.corrupt = corrupt  # (model, version) published broken: never a valid answer
        self.tally = SearchTally()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> SearchLoad:
        self._thread = threading.Thread(target=self._run, name="search-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SearchTally:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._error is not None:
            raise RuntimeError("search load crashed") from self._error
        return self.tally

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    async def _main(self) -> None:
        clients = {h: TFServingClient(t, options=CHANNEL_OPTIONS) for h, t in self.targets.items()}
        in_flight: set[asyncio.Task[None]] = set()
        lag = asyncio.create_task(self._watch_lag())
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += 1.0 / self.rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if len(in_flight) >= 16:  # the client is saturated: wait rather than pile up
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._search(clients))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
            await lag
        finally:
            for client in clients.values():
                await client.close()

    async def _watch_lag(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            late = time.monotonic() - before - LAG_PROBE_SECONDS
            if late >= STALL_SECONDS:
                with self._lock:
                    self.tally.stalls.append((before + LAG_PROBE_SECONDS - self.clock_zero, late))

    async def _search(self, clients: Mapping[str, TFServingClient]) -> None:
        hosts = sorted(clients)
        count = self._rng.randint(*CALLS_PER_SEARCH)
        first = self._rng.randrange(len(hosts))
        plan = [(hosts[(first + i) % len(hosts)], self.models[i % len(self.models)]) for i in range(count)]
        calls = await asyncio.gather(*(self._call(clients[h], h, m) for h, m in plan))
        failed = sum(1 for c in calls if c.code is not None)
        with self._lock:
            self.tally.searches += 1
            self.tally.tripped += failed > KILLSWITCH_FAILED_FRACTION * count
            self.tally.calls.extend(calls)

    async def _call(self, client: TFServingClient, host: str, model: str) -> Call:
        began = time.monotonic()
        start = began - self.clock_zero
        try:
            result = await client.predict(model, {"x": ([1.0], (1, 1))}, timeout=CALL_DEADLINE_SECONDS)
        except TFServingError as exc:
            return Call(start, time.monotonic() - began, host, model, exc.code, detail=str(exc)[:200])
        except Exception as exc:  # any other breakage fails a search call too
            return Call(start, time.monotonic() - began, host, model, type(exc).__name__, detail=str(exc)[:200])
        latency = time.monotonic() - began
        y = result.outputs.get("y", [float("nan")])[0]
        if (model, result.version) in self.corrupt:
            return Call(start, latency, host, model, "CORRUPT_VERSION_SERVED", result.version)
        if abs(y - result.version) > 1e-3 * max(1.0, abs(result.version)):
            return Call(start, latency, host, model, "WRONG_ANSWER", result.version, f"y={y}")
        return Call(start, latency, host, model, None, result.version)
