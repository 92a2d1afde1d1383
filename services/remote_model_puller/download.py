"""The download engine: one version's objects into a staging directory, fast, verified and durable.

- Raw HTTP to the GCS JSON API media endpoint (urllib3, one connection per worker thread), every
  request pinned to the generation seen in the listing (``generation=``): a replaced object answers 404
  and the whole version is abandoned (:class:`GenerationChanged`) so the caller restarts it from a new
  listing.
- Concurrency across objects and across ranges of large objects: the work is a flat queue of
  ``(object, byte range)`` tasks run by ``workers`` threads; ranges are written in place with
  ``os.pwrite`` into a preallocated file, so memory stays at ``workers * buffer_bytes``.
- CRC32C: each range is hashed while its bytes are in memory; the object's CRC is the ordered combination
  (:mod:`.crc`) compared with the listing's. A mismatch retries the object, then raises IntegrityError.
- Durability: each file is ``fsync``-ed by the worker that finishes it, directories by the caller
  (:mod:`.local`) before the one rename into place.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import google_crc32c
import urllib3

from services.common.errors import BucketError, BucketNotFound, BucketPermissionDenied, FleetError, IntegrityError
from services.remote_model_puller.crc import combine_parts, from_gcs_base64, to_gcs_base64

logger = logging.getLogger(__name__)

MiB = 1 << 20


class GenerationChanged(FleetError):
    """An object was replaced or deleted in the bucket while its version was downloading."""

    status_code = 409
    slug = "generation-changed"
    title = "Object changed during download"


class DownloadCancelled(FleetError):
    """The service is stopping."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object to fetch: full bucket name, path relative to the version dir, and listing facts."""

    name: str
    relative: str
    size: int
    generation: int
    crc32c: str | None


@dataclass
class Progress:
    """Bytes done of one version; read by the status endpoint while workers update it."""

    bytes_total: int
    bytes_done: int = 0
    started_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, count: int) -> None:
        with self._lock:
            self.bytes_done += count

    def rate(self) -> float:
        """Average bytes per second since the start."""
        elapsed = max(time.time() - self.started_at, 1e-6)
        return self.bytes_done / elapsed


HeaderSource = Callable[[], dict[str, str]]


@dataclass(frozen=True)
class EngineOptions:
    """Tuning of the engine (settings in production, small values in tests)."""

    workers: int = 8
    range_bytes: int = 32 * MiB
    buffer_bytes: int = 1 * MiB
    timeout_seconds: float = 30.0
    attempts: int = 3


class _ObjectState:
    """Per object: the open file, the CRC of each range, how many ranges are still running."""

    def __init__(self, spec: ObjectSpec, path: Path, ranges: list[tuple[int, int]]) -> None:
        self.spec = spec
        self.path = path
        self.ranges = ranges
        self.crcs: list[int | None] = [None] * len(ranges)
        self.remaining = len(ranges)
        self.lock = threading.Lock()
        self.fd = -1


class Downloader:
    """Fetch objects of one bucket with a shared connection pool (thread-safe, reusable)."""

    def __init__(
        self, *, endpoint: str, bucket: str, options: EngineOptions, headers: HeaderSource | None = None
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.options = options
        self._headers = headers or dict
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=max(options.workers, 1), block=False, retries=False)
        self.requests = 0  # object reads (ranged GETs), for the listing benchmark and metrics

    def close(self) -> None:
        self._pool.clear()

    def media_url(self, spec: ObjectSpec) -> str:
        name = quote(spec.name, safe="")
        return f"{self.endpoint}/download/storage/v1/b/{self.bucket}/o/{name}?alt=media&generation={spec.generation}"

    def download_version(
        self, objects: Sequence[ObjectSpec], dest: Path, *, progress: Progress, cancel: threading.Event
    ) -> None:
        """Write every object under ``dest`` (created), verified and fsynced; raises on any failure."""
        states = [self._prepare(spec, dest) for spec in objects]
        try:
            tasks = [(state, index) for state in states for index in range(len(state.ranges))]
            # Big ranges first so the tail of the run is made of small tasks.
            tasks.sort(key=lambda t: t[0].ranges[t[1]][1] - t[0].ranges[t[1]][0], reverse=True)
            workers = max(1, min(self.options.workers, len(tasks)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
                futures: list[Future[None]] = [
                    pool.submit(self._run_range, state, index, progress, cancel) for state, index in tasks
                ]
                done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    cancel_local = failed.exception()
                    for future in futures:
                        future.cancel()
                    assert cancel_local is not None
                    raise cancel_local
        finally:
            for state in states:
                if state.fd >= 0:
                    os.close(state.fd)
                    state.fd = -1

    def _prepare(self, spec: ObjectSpec, dest: Path) -> _ObjectState:
        path = dest / spec.relative
        path.parent.mkdir(parents=True, exist_ok=True)
        step = self.options.range_bytes
        ranges = [(start, min(start + step, spec.size)) for start in range(0, spec.size, step)] or [(0, 0)]
        state = _ObjectState(spec, path, ranges)
        state.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o664)
        if spec.size:
            try:
                os.posix_fallocate(state.fd, 0, spec.size)  # ENOSPC now, not halfway through
            except OSError as exc:
                if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: filesystem cannot, fall back
                    raise
                os.ftruncate(state.fd, spec.size)
        return state

    def _run_range(self, state: _ObjectState, index: int, progress: Progress, cancel: threading.Event) -> None:
        attempts = self.options.attempts
        for attempt in range(1, attempts + 1):
            if cancel.is_set():
                raise DownloadCancelled("download cancelled")
            try:
                crc = self._fetch_range(state, index, progress, cancel)
                break
            except BucketError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                logger.warning(
                    "range read failed, retrying: %s",
                    exc.detail,
                    extra={"object": state.spec.name, "attempt": attempt},
                )
                time.sleep(min(4.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))
        self._finish_range(state, index, crc, progress, cancel)

    def _finish_range(
        self, state: _ObjectState, index: int, crc: int, progress: Progress, cancel: threading.Event
    ) -> None:
        with state.lock:
            state.crcs[index] = crc
            state.remaining -= 1
            last = state.remaining == 0
        if not last:
            return
        os.fsync(state.fd)
        os.close(state.fd)
        state.fd = -1
        parts = [(c or 0, end - start) for c, (start, end) in zip(state.crcs, state.ranges, strict=True)]
        actual = to_gcs_base64(combine_parts(parts))
        expected = state.spec.crc32c
        if expected is None or from_gcs_base64(expected) == from_gcs_base64(actual):
            return
        logger.warning("crc32c mismatch: bucket says %s, got %s", expected, actual, extra={"object": state.spec.name})
        self._refetch(state, expected, actual, progress, cancel)

    def _refetch(
        self, state: _ObjectState, expected: str, actual: str, progress: Progress, cancel: threading.Event
    ) -> None:
        """Fetch a whole object again in this thread after a CRC mismatch (bounded), then give up."""
        for _attempt in range(1, self.options.attempts):
            progress.add(-state.spec.size)
            state.fd = os.open(state.path, os.O_WRONLY)
            try:
                parts = []
                for index, (start, end) in enumerate(state.ranges):
                    parts.append((self._fetch_range(state, index, progress, cancel), end - start))
                os.fsync(state.fd)
            finally:
                os.close(state.fd)
                state.fd = -1
            actual = to_gcs_base64(combine_parts(parts))
            if from_gcs_base64(actual) == from_gcs_base64(expected):
                return
        raise IntegrityError(
            f"crc32c mismatch for {state.spec.name}: bucket says {expected}, got {actual} "
            f"({self.options.attempts} attempts)",
            object=state.spec.name,
        )

    def _fetch_range(self, state: _ObjectState, index: int, progress: Progress, cancel: threading.Event) -> int:
        start, end = state.ranges[index]
        if end == start:
            return 0
        headers = {**self._headers(), "Range": f"bytes={start}-{end - 1}"}
        timeout = urllib3.Timeout(connect=min(self.options.timeout_seconds, 5.0), read=self.options.timeout_seconds)
        self.requests += 1
        try:
            response = self._pool.request(
                "GET", self.media_url(state.spec), headers=headers, preload_content=False, timeout=timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            raise BucketError(f"read {state.spec.name}: {type(exc).__name__}") from exc
        try:
            self._check_response(state.spec, response)
            return self._stream(state, response, start, end, progress, cancel)
        finally:
            response.drain_conn()
            response.release_conn()

    def _check_response(self, spec: ObjectSpec, response: urllib3.BaseHTTPResponse) -> None:
        status = response.status
        if status in (404, 412):
            raise GenerationChanged(f"{spec.name} generation {spec.generation} is gone from the bucket")
        if status in (401, 403):
            raise BucketPermissionDenied(f"read {spec.name}: HTTP {status}", retryable=False)
        if status == 429 or status >= 500:
            raise BucketError(f"read {spec.name}: HTTP {status}")
        if status not in (200, 206):
            raise BucketNotFound(f"read {spec.name}: HTTP {status}", retryable=False)
        generation = response.headers.get("x-goog-generation")
        if generation is not None and int(generation) != spec.generation:
            raise GenerationChanged(f"{spec.name} answered generation {generation}, expected {spec.generation}")

    def _stream(
        self,
        state: _ObjectState,
        response: urllib3.BaseHTTPResponse,
        start: int,
        end: int,
        progress: Progress,
        cancel: threading.Event,
    ) -> int:
        crc = 0
        offset = start
        buffer_bytes = self.options.buffer_bytes
        ok = False
        try:
            while offset < end:
                if cancel.is_set():
                    raise DownloadCancelled("download cancelled")
                chunk = response.read(min(buffer_bytes, end - offset))
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(state.fd, view, offset)
                    view = view[written:]
                    offset += written
                crc = google_crc32c.extend(crc, chunk)
                progress.add(len(chunk))
            if offset != end:
                raise BucketError(f"read {state.spec.name}: short read ({offset - start} of {end - start} bytes)")
            ok = True
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise BucketError(f"read {state.spec.name}: {type(exc).__name__} after {offset - start} bytes") from exc
        finally:
            if not ok:
                progress.add(start - offset)  # a retry counts these bytes again
        return int(crc)
