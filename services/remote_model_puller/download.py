"""The download engine: one version's objects into a staging directory, fast, verified and durable.

- Raw HTTP to the GCS JSON API media endpoint (:mod:`.media`: one keep-alive connection and one buffer
  per worker thread), every request pinned to the generation seen in the listing (``generation=``): a
  replaced object answers 404 and the whole version is abandoned (:class:`GenerationChanged`) so the
  caller restarts it from a new listing.
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
import errno
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import BucketError, IntegrityError
from services.remote_model_puller.crc import combine_parts, from_gcs_base64, to_gcs_base64
from services.remote_model_puller.media import DownloadCancelled, GenerationChanged, HeaderSource, MediaReader
from services.remote_model_puller.native import HashBuffer, start_writeback, syncfs

__all__ = [
    "DownloadCancelled",
    "Downloader",
    "EngineOptions",
    "GenerationChanged",
    "HeaderSource",
    "ObjectSpec",
    "Progress",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20
DIRECT_ALIGN = 4096  # O_DIRECT: buffer address, file offset and length multiples of the block size


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


@dataclass(frozen=True)
class EngineOptions:
    """Tuning of the engine (settings in production, small values in tests)."""

    workers: int = 8
    range_bytes: int = 32 * MiB
    buffer_bytes: int = 1 * MiB
    timeout_seconds: float = 30.0
    attempts: int = 3
    direct_io: bool = True

    def __post_init__(self) -> None:
        for name in ("range_bytes", "buffer_bytes"):
            if getattr(self, name) <= 0 or getattr(self, name) % DIRECT_ALIGN:
                raise ValueError(f"{name} must be a positive multiple of {DIRECT_ALIGN}")


Stop = Callable[[], bool]
BIG_OBJECT_BYTES = 8 * MiB
WRITEBACK_BYTES = 8 * MiB  # page-cache writes: start writeback every this many bytes (and at a range's end)


class _ObjectState:
    """Per object: the staged file, the CRC of each range, how many ranges are still running.

    The file is written with ``O_DIRECT`` when the options ask for it and the filesystem takes it: bytes
    go from the read buffer to the disk without passing through the page cache, so a gigabyte costs no
    page-cache allocation (expensive on VMs) and the final ``fsync`` only commits metadata. The last
    write of an object whose size is not a multiple of the block size is padded and the file truncated
    back to its size when it is complete. Where ``O_DIRECT`` is refused (tmpfs, some network or FUSE
    filesystems: ``EINVAL``), the file falls back to the page cache with early writeback.
    """

    def __init__(self, spec: ObjectSpec, path: Path, ranges: list[tuple[int, int]], *, direct: bool) -> None:
        self.spec = spec
        self.path = path
        self.ranges = ranges
        self.crcs: list[int | None] = [None] * len(ranges)
        self.remaining = len(ranges)
        self.lock = threading.Lock()
        self.fd = -1
        self.opened = False
        self.direct = direct and self.big
        self.padded = False

    @property
    def big(self) -> bool:
        """Big objects are preallocated, written with O_DIRECT and fsynced by themselves as they finish.
        Small ones go through the page cache with early writeback and are made durable by one syncfs at
        the end (per file, preallocation, O_DIRECT padding and fsync cost more than they save)."""
        return self.spec.size >= BIG_OBJECT_BYTES

    def open(self) -> int:
        """Create and preallocate the file on first use (at most ~workers files open at once)."""
        with self.lock:
            if not self.opened:
                self.fd = self._open(os.O_TRUNC)
                self.opened = True
                if self.big:
                    try:
                        os.posix_fallocate(self.fd, 0, self.spec.size)  # ENOSPC now, not halfway through
                    except OSError as exc:
                        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        os.ftruncate(self.fd, self.spec.size)
            return self.fd

    def reopen(self) -> int:
        """Open the existing file again (a whole-object refetch after a CRC mismatch)."""
        self.fd = self._open(0)
        return self.fd

    def _open(self, extra: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | extra
        if self.direct:
            try:
                return os.open(self.path, flags | os.O_DIRECT, 0o664)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._note_buffered("open")
        return os.open(self.path, flags, 0o664)

    def _note_buffered(self, where: str) -> None:
        if self.direct:
            self.direct = False
            logger.info("O_DIRECT refused (%s), writing through the page cache", where, extra={"path": str(self.path)})

    def write(self, buffer: HashBuffer, count: int, offset: int) -> None:
        """Write the buffer's first ``count`` bytes at ``offset`` (the whole of it reaches the file)."""
        if self.direct:
            view = buffer.view[:count]
            if count % DIRECT_ALIGN:  # only an object's last bytes
                view = buffer.padded(count, DIRECT_ALIGN)
                self.padded = True
            try:
                _pwrite_all(self.fd, view, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self._note_buffered("write")
        _pwrite_all(self.fd, buffer.view[:count], offset)

    def close(self, *, durable: bool) -> None:
        """Trim any O_DIRECT padding, fsync if asked, close."""
        try:
            if self.padded:
                os.ftruncate(self.fd, self.spec.size)
            if durable:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class Downloader:
    """Fetch objects of one bucket with a pool of ``workers`` threads (reusable; close() at the end)."""

    def __init__(
        self, *, endpoint: str, bucket: str, options: EngineOptions, headers: HeaderSource | None = None
    ) -> None:
        self.options = options
        self.reader = MediaReader(
            endpoint=endpoint,
            bucket=bucket,
            timeout=options.timeout_seconds,
            buffer_bytes=options.buffer_bytes,
            headers=headers,
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

    def _prepare(self, objects: Sequence[ObjectSpec], dest: Path) -> list[_ObjectState]:
        states = []
        made: set[Path] = set()
        step = self.options.range_bytes
        for spec in objects:
            path = dest / spec.relative
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            ranges = [(start, min(start + step, spec.size)) for start in range(0, spec.size, step)] or [(0, 0)]
            states.append(_ObjectState(spec, path, ranges, direct=self.options.direct_io))
        return states

    def _run_range(self, state: _ObjectState, index: int, progress: Progress, stop: Stop) -> None:
        attempts = self.options.attempts
        for attempt in range(1, attempts + 1):
            if stop():
                raise DownloadCancelled("download cancelled")
            try:
                crc = self._fetch_range(state, index, progress, stop)
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
        self._finish_range(state, index, crc, progress, stop)

    def _finish_range(self, state: _ObjectState, index: int, crc: int, progress: Progress, stop: Stop) -> None:
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

    def _refetch(self, state: _ObjectState, expected: str, actual: str, progress: Progress, stop: Stop) -> None:
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

    def _fetch_range(self, state: _ObjectState, index: int, progress: Progress, stop: Stop) -> int:
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
