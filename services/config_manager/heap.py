"""Give freed heap memory back to the OS (glibc ``malloc_trim``); a no-op elsewhere.

A pass allocates and frees many small protobuf and pydantic objects; without a trim, glibc keeps the
freed pages and the resident size only ever grows towards its high-water mark.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> None:
    """Return free heap pages to the OS, if the C library can."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
