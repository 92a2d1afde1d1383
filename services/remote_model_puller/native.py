"""Two native calls the download engine makes through ctypes (which releases the GIL during the call).

- CRC32C over a slice of a ``bytearray`` without copying it: ``google_crc32c.extend`` only takes
  immutable ``bytes`` (so every chunk would be copied) and holds the GIL while it hashes, which
  serialises eight download threads on a 2-core node. Its wheel ships the C library it wraps
  (``crc32c_extend``); that library is used directly when it can be found and passes a self-check
  against ``google_crc32c``, and ``google_crc32c.extend(bytes(...))`` is used otherwise.
- ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: when a file is written through the page cache (no
  ``O_DIRECT``), start writing back a range the moment it is written, so the disk works while the
  network does and the final ``fsync`` finds little left to flush. A hint only: durability still comes
  from ``fsync`` / ``syncfs``; a no-op where the call does not exist.

Read buffers are anonymous ``mmap``s: page-aligned, as ``O_DIRECT`` writes need.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

import google_crc32c

logger = logging.getLogger(__name__)

SYNC_FILE_RANGE_WRITE = 2
_CHECK = bytes(range(256)) * 17


def _load_crc32c_extend() -> Callable[[int, int, int], int] | None:
    package = Path(google_crc32c.__file__).parent
    candidates = sorted(str(p) for p in package.parent.glob("google_crc32c.libs/libcrc32c*.so*"))
    found = ctypes.util.find_library("crc32c")
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            function = ctypes.CDLL(candidate).crc32c_extend
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_uint32
        function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        probe = ctypes.create_string_buffer(_CHECK, len(_CHECK))
        if function(7, ctypes.addressof(probe), len(_CHECK)) == google_crc32c.extend(7, _CHECK):
            return function
    return None


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_crc32c_extend = _load_crc32c_extend()
_libc = _load_libc()
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.restype = ctypes.c_int
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def crc32c_implementation() -> str:
    """``native`` (the C library through ctypes, no copy, GIL released) or ``google_crc32c``."""
    return "native" if _crc32c_extend is not None else "google_crc32c"


class HashBuffer:
    """A reusable, page-aligned read buffer whose first ``n`` bytes can be CRC32C-hashed without a copy."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"buffer size must be a positive multiple of {mmap.PAGESIZE}, not {size}")
        self._map = mmap.mmap(-1, size)
        self.view = memoryview(self._map)
        self._array = (ctypes.c_char * size).from_buffer(self._map)  # pins the mapping while in use
        self._address = ctypes.addressof(self._array)

    def __len__(self) -> int:
        return len(self.view)

    def extend_crc(self, crc: int, count: int) -> int:
        """CRC32C of what ``crc`` covered followed by the buffer's first ``count`` bytes."""
        if _crc32c_extend is not None:
            return int(_crc32c_extend(crc, self._address, count))
        return int(google_crc32c.extend(crc, bytes(self.view[:count])))

    def padded(self, count: int, align: int) -> memoryview:
        """The first ``count`` bytes followed by zeros up to a multiple of ``align`` (for O_DIRECT)."""
        size = -(-count // align) * align
        if size > len(self.view):
            raise ValueError("padding past the buffer")
        self.view[count:size] = bytes(size - count)
        return self.view[:size]


def thread_buffer(local: threading.local, size: int) -> HashBuffer:
    """The calling thread's read buffer of ``size`` bytes, made on its first use (one per reader thread)."""
    buffer: HashBuffer | None = getattr(local, "buffer", None)
    if buffer is None:
        buffer = HashBuffer(size)
        local.buffer = buffer
    return buffer


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + length)`` of ``fd`` to disk (no wait)."""
    if _sync_file_range is None or length <= 0:
        return
    if _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        error = ctypes.get_errno()
        logger.debug("sync_file_range failed: %s", os.strerror(error))


def syncfs(directory: Path) -> None:
    """Flush the filesystem holding ``directory`` (Linux syncfs; ``sync`` elsewhere)."""
    function = getattr(_libc, "syncfs", None)
    if function is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if function(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(fd)
