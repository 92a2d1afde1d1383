"""The download engine: one version's objects into a staging directory, fast, verified and durable.

- Raw HTTP to the GCS JSON API media endpoint (:mod:`.media`: one keep-alive connection and one buffer
  per worker thread; or google-cloud-storage with ``FLEET_DOWNLOAD_ENGINE=sdk``, :mod:`.sdkreader`),
  every request pinned to the generation seen in the listing (``generation=``): a
  replaced object answers 404 and the whole version is abandoned (:class:`GenerationChanged`) so the
  caller restarts it from a new listing. A retryable failure (429, 5xx, a dropped connection) is retried
  with jittered exponential backoff within ``attempts`` and ``retry_deadline_seconds``.
- Concurrency across objects and across ranges of large objects: the work is a flat queue of
  ``(object, byte range)`` tasks run by ``workers`` threads; ranges are written in place with
  ``os.pwrite`` into a preallocated file, so memory stays at ``workers * buffer_bytes``.
- CRC32C: each range is hashed while its bytes are in memory; the object's CRC is the ordered combination
  (:mod:`.crc`) compared with the listing's. A mismatch retries the object, then raises IntegrityError.
- Durability: writeback of every range is started as soon as its bytes are written
  (``sync_file_range``, :mod:`.native`), so the disk works while the network does; each big file is
  then ``fsync``-ed by the worker that finishes it, small ones by one ``syncfs`` at the end of the
  version, directories by the caller (:mod:`.local`) before the one rename into place.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from services.common.credentials import TokenSource
from services.common.errors import BucketError, IntegrityError
from services.common.network import BucketNetwork
from services.remote_model_puller.crc import combine_parts, from_gcs_base64, to_gcs_base64
from services.remote_model_puller.media import DownloadCancelled, GenerationChanged, MediaReader, Sink
from services.remote_model_puller.native import HashBuffer, start_writeback, syncfs
from services.remote_model_puller.objectfile import DIRECT_ALIGN, ObjectFile, ObjectSpec

__all__ = [
    "DownloadCancelled",
    "Downloader",
    "EngineOptions",
    "GenerationChanged",
    "ObjectSpec",
    "Progress",
    "RangeReader",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass
class Progress:
    """Bytes done of one version; read by the status endpoint while workers update it."""

    bytes_total: int
    bytes_done: int = 0
    started_at: float = field(default_factory=time.time)
    #: Monotonic time bytes last arrived: a long download that moves is slow, not stuck (/healthz).
    moved_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, count: int) -> None:
        with self._lock:
            self.bytes_done += count
            self.moved_at = time.monotonic()

    def rate(self) -> float:
        """Average bytes per second since the start."""
        elapsed = max(time.time() - self.started_at, 1e-6)
        return self.bytes_done / elapsed


@dataclass(frozen=True)
class EngineOptions:
    """Tuning of the engine (settings in production, small values in tests)."""

    workers: int = 8
    range_bytes: int = 32 * MiB
    buffer_bytes: int = 1 * MiB
    timeout_seconds: float = 30.0
    attempts: int = 3
    #: Retryable failures of a range (429, 5xx, a dropped connection) are retried with jittered
    #: exponential backoff until ``attempts`` or until this long after the first try, whichever is first.
    retry_deadline_seconds: float = 60.0
    direct_io: bool = True

    def __post_init__(self) -> None:
        for name in ("range_bytes", "buffer_bytes"):
            if getattr(self, name) <= 0 or getattr(self, name) % DIRECT_ALIGN:
                raise ValueError(f"{name} must be a positive multiple of {DIRECT_ALIGN}")


Stop = Callable[[], bool]
WRITEBACK_BYTES = 8 * MiB  # page-cache writes: start writeback every this many bytes (and at a range's end)


class RangeReader(Protocol):
    """Where the bytes come from: the native media client (:class:`MediaReader`) or the SDK
    (:class:`~services.remote_model_puller.sdkreader.SdkRangeReader`)."""

    requests: int

    def read_range(self, name: str, generation: int, start: int, end: int, sink: Sink, stop: Stop) -> int: ...


class Downloader:
    """Fetch objects of one bucket with a pool of ``workers`` threads (reusable; close() at the end).

    Without ``reader``, bytes come from the native media client on ``endpoint`` (``auth`` and
    ``network`` for it); with one, from that reader. Verification and durability are the same."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        options: EngineOptions,
        auth: TokenSource | None = None,
        network: BucketNetwork | None = None,
        reader: RangeReader | None = None,
    ) -> None:
        self.options = options
        self.reader: RangeReader = reader or MediaReader(
            endpoint=endpoint,
            bucket=bucket,
            timeout=options.timeout_seconds,
            buffer_bytes=options.buffer_bytes,
            auth=auth,
            network=network,
        )
        self._pool = ThreadPoolExecutor(max_workers=max(options.workers, 1), thread_name_prefix="download")

    @property
    def requests(self) -> int:
        """Object reads (ranged GETs) so far: the listing benchmark and tests count them."""
        return self.reader.requests

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def download_version(
        self, objects: Sequence[ObjectSpec], dest: Path, *, progress: Progress, cancel: threading.Event
    ) -> None:
        """Write every object under ``dest`` (created), verified and fsynced; raises on any failure.

        ``workers`` loops share one queue of (object, range) tasks, big ranges first so the tail of the
        run is made of small tasks; the first failure stops the others (``abort``) and is raised.
        """
        abort = threading.Event()

        def stop() -> bool:
            return cancel.is_set() or abort.is_set()

        states = self._prepare(objects, dest)
        ordered = sorted(
            ((state, index) for state in states for index in range(len(state.ranges))),
            key=lambda task: task[0].ranges[task[1]][1] - task[0].ranges[task[1]][0],
            reverse=True,
        )
        tasks = collections.deque(ordered)
        errors: list[BaseException] = []

        def drain() -> None:
            while not stop():
                try:
                    state, index = tasks.popleft()
                except IndexError:
                    return
                try:
                    self._run_range(state, index, progress, stop)
                except BaseException as exc:
                    errors.append(exc)
                    abort.set()
                    return

        try:
            wait([self._pool.submit(drain) for _ in range(min(self.options.workers, len(tasks)))])
            if errors:
                raise next((e for e in errors if not isinstance(e, DownloadCancelled)), errors[0])
            if tasks or cancel.is_set():
                raise DownloadCancelled("download cancelled")
            if any(not state.big for state in states):
                syncfs(dest)
        finally:
            for state in states:
                if state.fd >= 0:
                    os.close(state.fd)
                    state.fd = -1

    def _prepare(self, objects: Sequence[ObjectSpec], dest: Path) -> list[ObjectFile]:
        states = []
        made: set[Path] = set()
        step = self.options.range_bytes
        for spec in objects:
            path = dest / spec.relative
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            ranges = [(start, min(start + step, spec.size)) for start in range(0, spec.size, step)] or [(0, 0)]
            states.append(ObjectFile(spec, path, ranges, direct=self.options.direct_io))
        return states

    def _run_range(self, state: ObjectFile, index: int, progress: Progress, stop: Stop) -> None:
        def log_retry(attempt: RetryCallState) -> None:
            error = attempt.outcome.exception() if attempt.outcome is not None else None
            logger.warning(
                "range read failed, retrying in %.2f s: %s",
                attempt.upcoming_sleep,
                getattr(error, "detail", error),
                extra={"object": state.spec.name, "attempt": attempt.attempt_number},
            )

        def pause(seconds: float) -> None:  # a stop (shutdown, a sibling failed) cuts the backoff short
            until = time.monotonic() + seconds
            while not stop() and time.monotonic() < until:
                time.sleep(min(0.05, max(until - time.monotonic(), 0)))
            if stop():
                raise DownloadCancelled("download cancelled")

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, BucketError) and exc.retryable),
            stop=stop_after_attempt(self.options.attempts) | stop_before_delay(self.options.retry_deadline_seconds),
            wait=wait_random_exponential(multiplier=0.2, max=4.0),
            sleep=pause,
            before_sleep=log_retry,
            reraise=True,
        )
        crc = retrying(self._fetch_range, state, index, progress, stop)
        self._finish_range(state, index, crc, progress, stop)

    def _finish_range(self, state: ObjectFile, index: int, crc: int, progress: Progress, stop: Stop) -> None:
        state.open()  # empty objects have no range to fetch but still become a file
        with state.lock:
            state.crcs[index] = crc
            state.remaining -= 1
            last = state.remaining == 0
        if not last:
            return
        state.close(durable=state.big)
        parts = [(c or 0, end - start) for c, (start, end) in zip(state.crcs, state.ranges, strict=True)]
        actual = to_gcs_base64(combine_parts(parts))
        expected = state.spec.crc32c
        if expected is None or from_gcs_base64(expected) == from_gcs_base64(actual):
            return
        logger.warning("crc32c mismatch: bucket says %s, got %s", expected, actual, extra={"object": state.spec.name})
        self._refetch(state, expected, actual, progress, stop)

    def _refetch(self, state: ObjectFile, expected: str, actual: str, progress: Progress, stop: Stop) -> None:
        """Fetch a whole object again in this thread after a CRC mismatch (bounded), then give up."""
        for _attempt in range(1, self.options.attempts):
            progress.add(-state.spec.size)
            state.reopen()
            parts = []
            try:
                for index, (start, end) in enumerate(state.ranges):
                    parts.append((self._fetch_range(state, index, progress, stop), end - start))
            finally:
                state.close(durable=len(parts) == len(state.ranges))
            actual = to_gcs_base64(combine_parts(parts))
            if from_gcs_base64(actual) == from_gcs_base64(expected):
                return
        raise IntegrityError(
            f"crc32c mismatch for {state.spec.name}: bucket says {expected}, got {actual} "
            f"({self.options.attempts} attempts)",
            object=state.spec.name,
        )

    def _fetch_range(self, state: ObjectFile, index: int, progress: Progress, stop: Stop) -> int:
        start, end = state.ranges[index]
        if end == start:
            return 0
        done = 0
        flushed = start
        state.open()

        def sink(buffer: HashBuffer, count: int, offset: int) -> None:
            nonlocal done, flushed
            state.write(buffer, count, offset)
            done += count
            progress.add(count)
            if not state.direct and (offset + count - flushed >= WRITEBACK_BYTES or offset + count == end):
                start_writeback(state.fd, flushed, offset + count - flushed)
                flushed = offset + count

        try:
            return self.reader.read_range(state.spec.name, state.spec.generation, start, end, sink, stop)
        except BaseException:
            progress.add(-done)  # a retry counts these bytes again
            raise
