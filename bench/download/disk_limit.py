"""The machine's durable write rate for a set's bytes: what ``dd bs=8M conv=fdatasync`` does, per file.

    python bench/download/disk_limit.py --dest DIR --files FILES.json [--direct]

Writes every (relative name, size) of the set under DIR from one 8 MiB random block (no network, no
hashing), ``fdatasync`` after each file as ``dd conv=fdatasync`` does, then fsyncs the directories.
``--direct`` opens with ``O_DIRECT`` (``dd oflag=direct``) for files of at least 8 MiB, the tail block
padded and the file truncated back, as the puller does. Prints one JSON line with the seconds it took
(interpreter start excluded, like the puller's pass time).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import time
from pathlib import Path

BLOCK = 8 << 20
ALIGN = 4096


def write_file(path: Path, size: int, block: mmap.mmap, *, direct: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    use_direct = direct and size >= BLOCK
    fd = os.open(path, flags | (os.O_DIRECT if use_direct else 0), 0o644)
    try:
        offset = 0
        while offset < size:
            count = min(BLOCK, size - offset)
            if use_direct:
                padded = -(-count // ALIGN) * ALIGN
                os.pwrite(fd, memoryview(block)[:padded], offset)
            else:
                os.pwrite(fd, memoryview(block)[:count], offset)
            offset += count
        if use_direct and size % ALIGN:
            os.ftruncate(fd, size)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--files", required=True, type=Path, help="JSON list of [relative name, size]")
    parser.add_argument("--direct", action="store_true")
    args = parser.parse_args()
    files = [(str(name), int(size)) for name, size in json.loads(args.files.read_text())]
    block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(BLOCK))
    started = time.perf_counter()
    args.dest.mkdir(parents=True, exist_ok=True)
    directories = {args.dest}
    for name, size in files:
        path = args.dest / name
        if path.parent not in directories:
            path.parent.mkdir(parents=True, exist_ok=True)
            directories.add(path.parent)
        write_file(path, size, block, direct=args.direct)
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    print(json.dumps({"ok": True, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
