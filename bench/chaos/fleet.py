"""The chaos fleet: the local fleet with a fault-injecting GCS proxy, one node's model volume on a small
tmpfs, one node inside a network namespace, and a Swarm-like supervisor that restarts what dies.

Layout (N nodes): master and fake GCS listen on the root end of a veth pair (``ROOT_IP``); every
service reaches the bucket through the proxy (``tests/remote_model_puller/proxy.py``, same address), the
bench itself publishes straight to fake GCS as an ML engineer would. node-1's ``LOCAL_MODEL_DIRECTORY``
is a ``tmpfs`` of ``volume_bytes`` (the "volume full" fault fills it); node-N runs inside the namespace.

The local fleet does not supervise its processes; Swarm does (``restart_policy: condition any, delay
10s`` in swarm-deploy.yml). :class:`Supervisor` plays that part: any process found dead — killed by the
chaos or crashed on its own — is started again ``restart_delay`` seconds later, and every death that the
chaos did not cause is recorded as ``unexpected``.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.local_fleet.fakegcs import FakeGcs
from services.local_fleet.fleet import FleetOptions, Node
from tests.remote_model_puller.proxy import Misbehaviour, gcs_proxy
from tests.support.faults import FaultFleet, NetnsNode
from tests.support.netns import NetNamespace

logger = logging.getLogger("chaos.fleet")

NAMESPACE = "mfh-chaos"  # own name and subnet: other tests' namespaces are never touched
SUBNET = "10.213.9"
DISK_MARGIN_BYTES = 1 << 20


class ChaosFleet(FaultFleet):
    """FaultFleet whose services use ``gcs_url`` (the proxy) and whose first node has a small tmpfs volume."""

    def __init__(self, root: Path, options: FleetOptions, *, host: str, gcs_url: str, volume_bytes: int) -> None:
        super().__init__(root, options, host=host)
        self.gcs_url = gcs_url
        self.volume_bytes = volume_bytes
        self.mounts: list[Path] = []

    def _common_env(self) -> dict[str, str]:
        env = super()._common_env()
        env["STORAGE_EMULATOR_HOST"] = self.gcs_url
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE"] = f"{self.gcs_url}/storage/v1/"
        return env

    def _node(self, index: int) -> Node:
        node = super()._node(index)
        if index == 1 and node.model_dir not in self.mounts:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.volume_bytes},mode=0775", "tmpfs", str(node.model_dir)],
                check=True,
                capture_output=True,
                timeout=20,
            )
            self.mounts.append(node.model_dir)
        return node

    def unmount(self) -> None:
        for path in self.mounts:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=20)
        self.mounts.clear()


@contextlib.contextmanager
def chaos_fleet(root: Path, *, nodes: int, volume_bytes: int) -> Iterator[tuple[ChaosFleet, Misbehaviour, NetnsNode]]:
    """Start the fleet (``nodes - 1`` in the root namespace, the last one in ``NAMESPACE``); tear it all down."""
    ns = NetNamespace(name=NAMESPACE, subnet=SUBNET)
    ns.delete()  # debris of an interrupted run of this bench only
    ns.create()
    fleet: ChaosFleet | None = None
    try:
        options = FleetOptions(
            nodes=nodes - 1,
            sync_interval=2.0,
            quiet_period=1.0,
            master_poll_interval=2.0,
            # The puller's free-space margin (1 GiB by default) scaled to the tiny volume and models.
            extra_env={"FLEET_DISK_MARGIN_BYTES": str(DISK_MARGIN_BYTES)},
        )
        fleet = ChaosFleet(root, options, host=ns.root_ip, gcs_url="", volume_bytes=volume_bytes)
        with gcs_proxy(fleet.gcs.url, host=ns.root_ip) as (proxy_url, rules):
            fleet.gcs_url = proxy_url  # the emulator's port is chosen before it starts
            fleet.start()
            netns_node = fleet.add_netns_node(ns)
            yield fleet, rules, netns_node
    finally:
        if fleet is not None:
            fleet.stop()
            fleet.unmount()
        ns.delete()


class Supervised(Protocol):
    name: str

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def kill(self) -> None: ...

    def log_tail(self, chars: int = 3000) -> str: ...


@dataclass
class EmulatorProcess:
    """fake GCS as a supervised process named ``gcs`` (its filesystem backend keeps the objects)."""

    gcs: FakeGcs
    name: str = "gcs"

    @property
    def pid(self) -> int | None:
        return self.gcs.proc.pid if self.gcs.proc else None

    def alive(self) -> bool:
        return self.gcs.proc is not None and self.gcs.proc.poll() is None

    def start(self) -> None:
        self.gcs.start()

    def kill(self) -> None:
        self.gcs.stop()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.gcs.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@dataclass
class Supervisor:
    """Restart dead processes after ``restart_delay`` (Swarm's restart policy); record every death.

    fake GCS is supervised too (no Swarm task in production: the bucket is Google's), so that its outage
    is bounded and a crash of the emulator itself shows up as an unexpected death, not a hung run.
    """

    fleet: ChaosFleet
    restart_delay: float
    started: float
    deaths: list[dict[str, object]] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    _dead_since: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def processes(self) -> dict[str, Supervised]:
        procs: dict[str, Supervised] = {p.name: p for p in self.fleet.processes()}
        procs["gcs"] = EmulatorProcess(self.fleet.gcs)
        return procs

    def kill(self, name: str) -> None:
        """kill -9 one process (``node-2/serving``, ``master``...) as an expected death."""
        with self._lock:
            self.expected.add(name)
        self.processes()[name].kill()

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def settled(self) -> bool:
        """No process waiting for its restart."""
        with self._lock:
            return not self._dead_since

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, proc in self.processes().items():
                self._check(name, proc)

    def _check(self, name: str, proc: Supervised) -> None:
        now = time.monotonic()
        if proc.alive():
            return
        with self._lock:
            if name not in self._dead_since:
                self._dead_since[name] = now
                cause = "chaos" if name in self.expected else "unexpected"
                self.expected.discard(name)
                death: dict[str, object] = {"process": name, "at": round(now - self.started, 2), "cause": cause}
                if cause == "unexpected":
                    death["log_tail"] = proc.log_tail(1500)  # why it died, before its restart appends
                self.deaths.append(death)
                level = logging.INFO if cause == "chaos" else logging.ERROR
                logger.log(level, "%s is down (%s); restart in %.0fs", name, cause, self.restart_delay)
            if now - self._dead_since[name] < self.restart_delay:
                return
        try:
            proc.start()
        except (OSError, RuntimeError):
            logger.exception("restarting %s failed; next try in %.0fs", name, self.restart_delay)
            with self._lock:
                self._dead_since[name] = now
            return
        with self._lock:
            self._dead_since.pop(name, None)
        logger.info("%s restarted (pid %s)", name, proc.pid)
