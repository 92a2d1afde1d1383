"""A whole fleet on one machine: fake GCS, master, and N nodes of local_serving + puller + config_manager.

Each node has its own model directory, models.config, ports and HOSTNAME, exactly as a Swarm node would
have its own volume and containers. The same launcher serves the README's run command and the
end-to-end tests.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.cloud import storage

from services.local_fleet.fakegcs import FakeGcs
from services.local_fleet.ports import free_port, wait_port
from services.local_fleet.processes import ManagedProcess, python_module
from services.local_fleet.pubsub import PubSubEmulator
from services.local_fleet.stackflags import production_serving_args

EVENTS_PROJECT = "modelfleet-local"
EVENTS_TOPIC = "bucket-events"
ADMIN_NAME = "local-admin"
READ_NAME = "local-reader"
# The nodes' sidecars listen on per-node loopback ports: master may call any port of 127.0.0.1, nothing else.
LOOPBACK_SIDECARS = "127.0.0.1:*"
MONITORING_PATH = "/monitoring/prometheus/metrics"  # docker/tfserving/monitoring.config


@dataclass
class FleetOptions:
    """Knobs of a local fleet (short intervals so a demo converges in seconds)."""

    nodes: int = 3
    bucket: str = "models"
    prefix: str = "models"
    sync_interval: float = 2.0
    quiet_period: float = 1.0
    master_poll_interval: float = 2.0
    master_port: int | None = None
    log_format: str = "text"
    serving_args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    # Bucket notifications: fake-gcs-server publishes to the Pub/Sub emulator, the pullers subscribe.
    events: bool = False
    events_check_interval: float = 2.0


@dataclass
class Node:
    """One simulated node: its directories, ports and three processes."""

    hostname: str
    root: Path
    grpc_port: int
    rest_port: int
    puller_port: int
    config_manager_port: int
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.root / "local_saved_models"

    @property
    def config_file(self) -> Path:
        return self.root / "serving_config" / "models.config"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def puller(self) -> ManagedProcess:
        return self.processes["puller"]

    @property
    def config_manager(self) -> ManagedProcess:
        return self.processes["config_manager"]

    @property
    def serving(self) -> ManagedProcess:
        return self.processes["serving"]


class LocalFleet:
    """Start, inspect and stop a local fleet rooted at ``root`` (wiped at start)."""

    def __init__(self, root: Path, options: FleetOptions | None = None) -> None:
        self.root = root
        self.options = options or FleetOptions()
        self.pubsub = PubSubEmulator(project=EVENTS_PROJECT) if self.options.events else None
        notify = (self.pubsub.host, EVENTS_PROJECT, EVENTS_TOPIC) if self.pubsub is not None else None
        self.gcs = FakeGcs(backend="filesystem", root=root / "gcs", notify=notify)
        self.fleet_token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.read_token = secrets.token_urlsafe(24)
        self.master_port = self.options.master_port or free_port()
        self.master: ManagedProcess | None = None
        self.nodes: list[Node] = []

    # -- layout ------------------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.master_port}"

    @property
    def remote_model_directory(self) -> str:
        return f"gs://{self.options.bucket}/{self.options.prefix}"

    def _secrets(self) -> tuple[Path, Path]:
        secrets_dir = self.root / "secrets"
        secrets_dir.mkdir(parents=True, exist_ok=True)
        fleet = secrets_dir / "fleet_token"
        admin = secrets_dir / "admin_tokens"
        fleet.write_text(self.fleet_token + "\n")
        admin.write_text(f"{ADMIN_NAME}:{self.admin_token}\nread {READ_NAME}:{self.read_token}\n")
        fleet.chmod(0o600)
        admin.chmod(0o600)
        return fleet, admin

    @property
    def sidecar_addresses(self) -> str:
        """master's ``FLEET_SIDECAR_ADDRESSES``: where this fleet's sidecars listen."""
        return LOOPBACK_SIDECARS

    def _common_env(self) -> dict[str, str]:
        fleet_token, _ = self._secrets()
        return {
            **self.gcs.env(),
            "REMOTE_MODEL_DIRECTORY": self.remote_model_directory,
            "FLEET_MASTER_URL": self.master_url,
            "FLEET_TOKEN_FILE": str(fleet_token),
            "FLEET_LOG_FORMAT": self.options.log_format,
            "FLEET_HOST": "127.0.0.1",
            "FLEET_SYNC_INTERVAL_SECONDS": str(self.options.sync_interval),
            "FLEET_QUIET_PERIOD_SECONDS": str(self.options.quiet_period),
            "FLEET_REGISTER_INTERVAL_SECONDS": "2",
            "FLEET_HTTP_TIMEOUT_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            **self._events_env(),
            **self.options.extra_env,
        }

    def _events_env(self) -> dict[str, str]:
        if self.pubsub is None:
            return {}
        return {
            **self.pubsub.env(),
            "FLEET_EVENTS_PROJECT": EVENTS_PROJECT,
            "FLEET_EVENTS_TOPIC": EVENTS_TOPIC,
            "FLEET_EVENTS_CHECK_SECONDS": str(self.options.events_check_interval),
        }

    def _master_process(self) -> ManagedProcess:
        _, admin = self._secrets()
        env = {
            **self._common_env(),
            "HOSTNAME": "master",
            "FLEET_PORT": str(self.master_port),
            "FLEET_STATE_DIR": str(self.root / "master"),
            "FLEET_ADMIN_TOKENS_FILE": str(admin),
            "FLEET_POLL_INTERVAL_SECONDS": str(self.options.master_poll_interval),
            "FLEET_SIDECAR_ADDRESSES": self.sidecar_addresses,
        }
        return ManagedProcess(
            name="master",
            args=python_module("services.master"),
            env=env,
            log_path=self.root / "logs" / "master.log",
            health_url=f"{self.master_url}/healthz",
        )

    def _node(self, index: int) -> Node:
        hostname = f"node-{index}"
        node = Node(
            hostname=hostname,
            root=self.root / hostname,
            grpc_port=free_port(),
            rest_port=free_port(),
            puller_port=free_port(),
            config_manager_port=free_port(),
        )
        node.model_dir.mkdir(parents=True, exist_ok=True)
        node.config_file.parent.mkdir(parents=True, exist_ok=True)
        logs = self.root / "logs"
        base = {**self._common_env(), "HOSTNAME": hostname, "LOCAL_MODEL_DIRECTORY": str(node.model_dir)}
        node.processes["config_manager"] = ManagedProcess(
            name=f"{hostname}/config_manager",
            args=python_module("services.config_manager"),
            env={
                **base,
                "FLEET_PORT": str(node.config_manager_port),
                "FLEET_ADVERTISE_URL": f"http://127.0.0.1:{node.config_manager_port}",
                "FLEET_STATE_DIR": str(node.root / "app-config_manager"),
                "TENSORFLOW_SERVING_CONFIG_FILE": str(node.config_file),
                "TENSORFLOW_SERVING_GRPC_TARGET": node.grpc_target,
                "FLEET_TENSORFLOW_SERVING_METRICS_URL": f"http://127.0.0.1:{node.rest_port}{MONITORING_PATH}",
            },
            log_path=logs / f"{hostname}-config_manager.log",
            health_url=f"http://127.0.0.1:{node.config_manager_port}/healthz",
        )
        node.processes["serving"] = ManagedProcess(
            name=f"{hostname}/serving",
            # The stack's own tfserving flags (swarm-deploy.yml), with this node's ports and paths.
            args=python_module(
                "services.local_serving",
                *production_serving_args(port=node.grpc_port, rest_port=node.rest_port, config_file=node.config_file),
                *self.options.serving_args,
            ),
            env={"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
            log_path=logs / f"{hostname}-serving.log",
        )
        node.processes["puller"] = ManagedProcess(
            name=f"{hostname}/puller",
            args=python_module("services.remote_model_puller"),
            env={
                **base,
                "FLEET_PORT": str(node.puller_port),
                "FLEET_ADVERTISE_URL": f"http://127.0.0.1:{node.puller_port}",
                "FLEET_STATE_DIR": str(node.root / "app-puller"),
            },
            log_path=logs / f"{hostname}-puller.log",
            health_url=f"http://127.0.0.1:{node.puller_port}/healthz",
        )
        return node

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, *, timeout: float = 180.0) -> None:
        """Start everything and wait until each process answers its health check."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        if self.pubsub is not None:
            self.pubsub.log_path = self.root / "pubsub-emulator.log"
            self.pubsub.start()
            self.pubsub.create_topic(EVENTS_TOPIC)  # the bucket notification's topic
        self.gcs.start()
        self.gcs.client().create_bucket(self.options.bucket)
        self.master = self._master_process()
        self.master.start()
        self.nodes = [self._node(i + 1) for i in range(self.options.nodes)]
        for node in self.nodes:
            node.config_manager.start()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self._wait_for_file(node.config_file, deadline, node.config_manager)
            node.serving.start()
            node.puller.start()
        self.master.wait_healthy(max(1.0, deadline - time.monotonic()))
        for node in self.nodes:
            if not wait_port(node.grpc_port, timeout=max(1.0, deadline - time.monotonic())):
                raise RuntimeError(f"{node.serving.name} did not open its port:\n{node.serving.log_tail()}")
            for name in ("config_manager", "puller"):
                node.processes[name].wait_healthy(max(1.0, deadline - time.monotonic()))

    @staticmethod
    def _wait_for_file(path: Path, deadline: float, owner: ManagedProcess) -> None:
        while not path.exists():
            if time.monotonic() > deadline or not owner.alive():
                raise RuntimeError(f"{owner.name} did not create {path}:\n{owner.log_tail()}")
            time.sleep(0.05)

    def processes(self) -> Iterator[ManagedProcess]:
        for node in self.nodes:
            yield from node.processes.values()
        if self.master is not None:
            yield self.master

    def stop(self) -> None:
        """Stop every process (sidecars and master by SIGTERM, then the emulator)."""
        for proc in self.processes():
            proc.stop()
        self.gcs.close()
        if self.pubsub is not None:
            self.pubsub.stop()

    # -- bucket ------------------------------------------------------------------------------------
    def bucket(self) -> storage.Bucket:
        return self.gcs.client().bucket(self.options.bucket)

    def publish(self, model: str, version_dir: Path, *, version: int | str | None = None) -> list[str]:
        """Upload a SavedModel version directory as a careful ML engineer would: the graph last.

        Variables first and ``saved_model.pb`` last means no listing ever shows a graph without its
        variables; the completeness rule (shards + quiet period, or a marker) covers careless uploads.
        """
        name = str(version if version is not None else version_dir.name)
        dest = f"{self.options.prefix}/{model}/{name}/"
        bucket = self.bucket()
        files = sorted(p for p in version_dir.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name.startswith("saved_model."))
        uploaded = []
        for path in files:
            blob_name = dest + path.relative_to(version_dir).as_posix()
            bucket.blob(blob_name).upload_from_filename(str(path))
            uploaded.append(blob_name)
        return uploaded

    # -- master API --------------------------------------------------------------------------------
    def admin(self, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client for master's admin API, with the admin token."""
        return httpx.Client(
            base_url=self.master_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            trust_env=False,
        )

    def reader(self, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client for master's read routes, with the read-only token."""
        return httpx.Client(
            base_url=self.master_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.read_token}"},
            trust_env=False,
        )

    def cluster(self, *, refresh: bool = True) -> dict[str, Any]:
        with self.admin() as client:
            response = client.get("/v1/cluster", params={"refresh": str(refresh).lower()})
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        """Where everything listens (printed by the CLI, written to ``root/fleet.json``)."""
        return {
            "master": self.master_url,
            "gcs": self.gcs.url,
            "pubsub": self.pubsub.host if self.pubsub is not None else None,
            "bucket": self.remote_model_directory,
            "admin_token_file": str(self.root / "secrets" / "admin_tokens"),
            "fleet_token_file": str(self.root / "secrets" / "fleet_token"),
            "nodes": [
                {
                    "hostname": n.hostname,
                    "grpc": n.grpc_target,
                    "rest": f"http://127.0.0.1:{n.rest_port}",
                    "puller": f"http://127.0.0.1:{n.puller_port}",
                    "config_manager": f"http://127.0.0.1:{n.config_manager_port}",
                    "model_dir": str(n.model_dir),
                }
                for n in self.nodes
            ],
        }

    def write_description(self) -> Path:
        path = self.root / "fleet.json"
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")
        return path
