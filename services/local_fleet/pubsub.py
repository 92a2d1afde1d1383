"""The Pub/Sub emulator (``gcloud beta emulators pubsub start``) as a process, for the local fleet and tests.

It needs the Debian package ``google-cloud-cli-pubsub-emulator`` (and a Java runtime); without it,
:meth:`PubSubEmulator.start` fails with a message naming the package. Start-up takes seconds (a JVM):
start one per test module or fleet and share it. State is in memory: a restart loses topics and
subscriptions, as a real outage of the notification path would lose messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from services.local_fleet.ports import free_port

PACKAGE = "google-cloud-cli-pubsub-emulator"
MISSING = (
    f"the Pub/Sub emulator is not installed: apt-get install -y {PACKAGE} (and a Java runtime); "
    "scripts/bootstrap.sh installs it"
)


def emulator_installed() -> bool:
    """gcloud and its pubsub-emulator component are present."""
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        return False
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    return (sdk_root / "platform" / "pubsub-emulator").is_dir()


class PubSubEmulator:
    """One emulator on loopback; ``stop()``/``start()`` again on the same port simulate an outage."""

    def __init__(self, *, project: str = "modelfleet", port: int | None = None, log_dir: Path | None = None) -> None:
        self.project = project
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        log_dir = log_dir or Path(tempfile.gettempdir())
        self.log_path = log_dir / f"pubsub-emulator-{self.port}.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client (the puller, fake-gcs-server, gcloud) needs to use this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it accepts connections; a missing package is a clear error."""
        if not emulator_installed():
            raise RuntimeError(MISSING)
        args = [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={self.host}",
            f"--project={self.project}",
        ]
        with open(self.log_path, "ab") as log:
            # Own session: gcloud starts the JVM as a child; stop() kills the whole group.
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited: {self.log_path.read_text()[-2000:]}")
            if "Server started" in self.log_path.read_text(errors="replace"):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the Pub/Sub emulator did not start in {timeout:.0f}s (log: {self.log_path})")

    def stop(self) -> None:
        """Kill the emulator and its JVM (messages, topics and subscriptions are lost)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def publisher(self) -> pubsub_v1.PublisherClient:
        channel = grpc.insecure_channel(self.host)
        return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))

    def create_topic(self, topic: str) -> str:
        """Create ``topic`` (idempotent); returns its path."""
        publisher = self.publisher()
        path: str = publisher.topic_path(self.project, topic)
        try:
            publisher.create_topic(request={"name": path}, timeout=10)
        except gexc.AlreadyExists:
            pass
        finally:
            publisher.transport.close()
        return path
