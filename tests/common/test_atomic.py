"""Atomic writes: fsync file → rename → fsync dir, and a SIGKILLed writer never leaves a torn file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common import atomic
from services.common.atomic import atomic_write_bytes, exchange_paths, is_temp_name, remove_stale_temps


def test_call_order_is_fsync_file_rename_fsync_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    fd_paths: dict[int, str] = {}

    def recording_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        fd_paths[fd] = str(path)
        return fd

    def recording_fsync(fd: int) -> None:
        path = fd_paths.get(fd, "?")
        calls.append(("fsync-dir" if os.path.isdir(path) else "fsync-file", path))
        real_fsync(fd)

    def recording_replace(src, dst) -> None:
        calls.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "open", recording_open)
    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    target = tmp_path / "models.config"
    atomic_write_bytes(target, b"model_config_list {}\n")
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync-file", "rename", "fsync-dir"]
    assert calls[1][1] == str(target) and calls[2][1] == str(tmp_path)
    assert target.read_bytes() == b"model_config_list {}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]


def test_failed_write_leaves_old_content_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "desired.json"
    atomic_write_bytes(target, b"old")

    def full_disk(fd: int, data) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["desired.json"]


WRITER = """
import sys
from pathlib import Path
from services.common.atomic import atomic_write_bytes
target = Path(sys.argv[1])
payloads = [b"A" * 1_500_000, b"B" * 700_000 + b"end"]
i = 0
sys.stdout.write("ready\\n"); sys.stdout.flush()
while True:
    atomic_write_bytes(target, payloads[i % 2])
    i += 1
"""


def test_sigkill_at_random_points_never_tears_the_file(tmp_path: Path) -> None:
    target = tmp_path / "models.config"
    valid = {b"A" * 1_500_000, b"B" * 700_000 + b"end"}
    atomic_write_bytes(target, b"A" * 1_500_000)
    rng = random.Random(1234)
    trials = 30
    for _ in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert target.read_bytes() in valid
        visible = [p.name for p in tmp_path.iterdir() if not is_temp_name(p.name)]
        assert visible == ["models.config"], visible
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]


def test_exchange_paths_swaps_two_directories_in_one_step(tmp_path: Path) -> None:
    old, new = tmp_path / "7", tmp_path / ".staging-7"
    old.mkdir()
    new.mkdir()
    (old / "saved_model.pb").write_text("old")
    (new / "saved_model.pb").write_text("new")
    assert exchange_paths(new, old)  # ext4, tmpfs, xfs, btrfs: supported
    assert (old / "saved_model.pb").read_text() == "new"
    assert (new / "saved_model.pb").read_text() == "old"
    with pytest.raises(FileNotFoundError):
        exchange_paths(tmp_path / "missing", old)
