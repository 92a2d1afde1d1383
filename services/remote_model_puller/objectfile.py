"""One object's staged file: created on first use, written at offsets by several workers, closed by the
worker that finishes its last range. How the bytes reach the disk depends on the object's size (below).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from services.remote_model_puller.native import HashBuffer

logger = logging.getLogger(__name__)

MiB = 1 << 20
BIG_OBJECT_BYTES = 8 * MiB
DIRECT_ALIGN = 4096  # O_DIRECT: buffer address, file offset and length multiples of the block size


@dataclass(frozen=True)
class ObjectSpec:
    """One object to fetch: full bucket name, path relative to the version dir, and listing facts."""

    name: str
    relative: str
    size: int
    generation: int
    crc32c: str | None


class ObjectFile:
    """Per object: the staged file, the CRC of each range, how many ranges are still running.

    A big object's file is written with ``O_DIRECT`` when the options ask for it and the filesystem takes it: bytes
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
