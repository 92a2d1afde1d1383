"""Model versions for the chaos run, written by a child process so TensorFlow never runs in the bench's own
process (its GIL-holding save would stall the search load's client and fail calls no server failed).

``python bench/chaos/versions.py DIR MODEL:COUNT...`` writes ``DIR/MODEL/1..COUNT`` for each model in turn
(y = version * x, two warm-up records each); each appears atomically, so the bench waits for the one it
needs. A corrupt version is a good one with ``saved_model.pb`` cut in half (TF Serving: DATA_LOSS).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_writer(directory: Path, counts: dict[str, int]) -> subprocess.Popen[bytes]:
    """Start writing versions 1..count of each model in the background (nice 10: the fleet comes first)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "writer.log", "ab") as log:
        return subprocess.Popen(
            ["nice", "-n", "10", sys.executable, str(Path(__file__)), str(directory)]
            + [f"{model}:{count}" for model, count in counts.items()],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )


def wait_version(directory: Path, model: str, version: int, writer: subprocess.Popen[bytes], timeout: float) -> Path:
    """The version's directory once written (bounded; raises if the writer died first)."""
    path = directory / model / str(version)
    deadline = time.monotonic() + timeout
    while not path.is_dir():
        if writer.poll() is not None and not path.is_dir():
            raise RuntimeError(f"the version writer exited ({writer.returncode}) before {model}/{version}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model}/{version} not written within {timeout}s")
        time.sleep(0.1)
    return path


def corrupt_copy(good: Path, target: Path) -> Path:
    """``target``: a copy of ``good`` whose saved_model.pb is cut in half (the version number is the caller's)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(good, target)
    pb = target / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    return target


def main() -> int:
    directory = Path(sys.argv[1])
    sys.path.insert(0, str(ROOT))
    from tests.support.savedmodels import write_model

    for spec in sys.argv[2:]:
        model, count = spec.split(":")
        for version in range(1, int(count) + 1):
            if not (directory / model / str(version)).exists():
                write_model(directory / model, version, warmup_requests=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
