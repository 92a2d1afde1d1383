"""Atomic, durable file writes: temp file in the same directory, fsync, rename, fsync the directory.

Readers (tfserving, the other sidecar, a restarted process) see the old content or the new one, never a
torn file. Temp names start with ``.`` and contain ``.tmp`` so neither TF Serving's version scan (integer
names only) nor our own readers pick them up.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

TEMP_MARKER = ".tmp-"
DEFAULT_FILE_MODE = 0o664


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A unique, hidden sibling of ``path`` to write into before the rename."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_path_for` (so cleaners and readers can skip them)."""
    return name.startswith(".") and TEMP_MARKER in name


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: Path, document: BaseModel | dict[str, Any], *, mode: int = DEFAULT_FILE_MODE) -> None:
    """Write a contract model (strictly, by alias) or a plain dict as pretty JSON, atomically."""
    if isinstance(document, BaseModel):
        text = document.model_dump_json(indent=2, by_alias=True)
    else:
        text = json.dumps(document, indent=2, sort_keys=True)
    atomic_write_text(path, text + "\n", mode=mode)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files a killed writer left behind in ``directory``; returns what was removed."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if is_temp_name(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28, or not Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (``renameat2(RENAME_EXCHANGE)``): no moment in which either
    name is missing. False where the kernel, libc or filesystem cannot (ENOSYS, EINVAL: e.g. some NFS,
    FUSE or overlay mounts): the caller falls back to two renames."""
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))
