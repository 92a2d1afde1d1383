"""The search-like load (bench/chaos/load.py) in a process of its own.

The bench's main process polls every node's model status every 100 ms and opens channels to wait for
convergence; sharing its interpreter lock with the load's client delayed whole searches by 100-200 ms
at once (every node's calls of one search late together). In its own process the client only competes
for CPU, as the search cluster's own machines would not even do. CLOCK_MONOTONIC is system-wide, so
call times stay on the bench's clock.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection

from bench.chaos.load import SearchLoad, SearchTally

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 60.0


def _serve(conn: Connection, targets: dict[str, str], models: list[str], options: dict[str, object]) -> None:
    load = SearchLoad(targets, models, **options).start()  # type: ignore[arg-type]
    conn.send("started")
    conn.recv()  # "stop"
    conn.send(load.stop())


class LoadProcess:
    """``SearchLoad`` started in a spawned child; ``stop()`` returns its tally."""

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
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        options = {"rate": rate, "clock_zero": clock_zero, "seed": seed, "corrupt": corrupt}
        self._process = context.Process(
            target=_serve, args=(child, dict(targets), list(models), options), name="search-load", daemon=True
        )

    def start(self) -> LoadProcess:
        self._process.start()
        if not self._conn.poll(START_TIMEOUT_SECONDS):
            self._process.kill()
            raise RuntimeError("the search load did not start")
        self._conn.recv()
        return self

    def stop(self) -> SearchTally:
        self._conn.send("stop")
        if not self._conn.poll(STOP_TIMEOUT_SECONDS):
            self._process.kill()
            raise RuntimeError("the search load did not stop")
        tally: SearchTally = self._conn.recv()
        self._process.join(timeout=10)
        return tally
