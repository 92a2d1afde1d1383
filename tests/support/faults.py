"""The local fleet, composed for fault injection: reachable sidecars, a node inside a network namespace,
and the checks a 3am operator would make (no partial versions, status, metrics, fleetctl output).

``FaultFleet`` extends ``services.local_fleet.LocalFleet`` without changing it:
- every sidecar advertises ``http://127.0.0.1:<port>`` (``FLEET_ADVERTISE_URL``) so master can poll it;
- master and fake GCS can listen on another local address (the root end of a veth pair), so a node
  running inside a namespace reaches them while the other nodes keep using it from the root namespace;
- ``add_netns_node(ns)`` starts a node whose three processes run inside ``ns`` (``ip netns exec``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.common.contracts import Manifest
from services.common.contracts.local import manifest_path
from services.local_fleet.fakegcs import FakeGcs
from services.local_fleet.fleet import FleetOptions, LocalFleet, Node
from services.local_fleet.ports import wait_port
from services.local_fleet.processes import ManagedProcess
from tests.support.netns import NetNamespace

T = TypeVar("T")


@dataclass
class NetnsNode(Node):
    """A node whose processes run inside a network namespace, reached at ``address``."""

    address: str = "127.0.0.1"
    namespace: NetNamespace | None = None

    @property
    def grpc_target(self) -> str:
        return f"{self.address}:{self.grpc_port}"


class FaultFleet(LocalFleet):
    """A LocalFleet whose master and bucket listen on ``host`` and whose sidecars master can reach."""

    def __init__(self, root: Path, options: FleetOptions | None = None, *, host: str = "127.0.0.1") -> None:
        super().__init__(root, options)
        self.host = host
        if host != "127.0.0.1":
            self.gcs = FakeGcs(host=host, backend="filesystem", root=root / "gcs")

    @property
    def master_url(self) -> str:
        return f"http://{self.host}:{self.master_port}"

    @property
    def sidecar_addresses(self) -> str:
        """Loopback ports, and the namespaces' side of the veth pairs (same /24 as master's address)."""
        if self.host == "127.0.0.1":
            return super().sidecar_addresses
        return f"{super().sidecar_addresses},{ipaddress.ip_network(self.host + '/24', strict=False)}:*"

    def _master_process(self) -> ManagedProcess:
        proc = super()._master_process()
        return dataclasses.replace(proc, env={**proc.env, "FLEET_HOST": self.host})

    def _node(self, index: int) -> Node:
        node = super()._node(index)
        ports = {"puller": node.puller_port, "config_manager": node.config_manager_port}
        for role, port in ports.items():
            proc = node.processes[role]
            node.processes[role] = dataclasses.replace(
                proc, env={**proc.env, "FLEET_ADVERTISE_URL": f"http://127.0.0.1:{port}"}
            )
        return node

    def add_netns_node(self, ns: NetNamespace, *, timeout: float = 120.0) -> NetnsNode:
        """Start one more node with its local_serving, puller and config_manager inside ``ns``."""
        base = self._node(len(self.nodes) + 1)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Node)}
        node = NetnsNode(**fields, address=ns.ns_ip, namespace=ns)
        ports = {"puller": node.puller_port, "config_manager": node.config_manager_port}
        for role, proc in list(node.processes.items()):
            env = dict(proc.env)
            health = proc.health_url
            if role in ports:
                env.update(
                    FLEET_HOST="0.0.0.0",  # inside the namespace: its loopback and its veth only
                    FLEET_ADVERTISE_URL=f"http://{ns.ns_ip}:{ports[role]}",
                )
                health = f"http://{ns.ns_ip}:{ports[role]}/healthz"
            node.processes[role] = dataclasses.replace(proc, args=ns.command(proc.args), env=env, health_url=health)
        node.config_manager.start()
        deadline = time.monotonic() + timeout
        self._wait_for_file(node.config_file, deadline, node.config_manager)
        node.serving.start()
        node.puller.start()
        if not wait_port(node.grpc_port, host=ns.ns_ip, timeout=max(1.0, deadline - time.monotonic())):
            raise RuntimeError(f"{node.serving.name} did not open its port:\n{node.serving.log_tail()}")
        for role in ports:
            node.processes[role].wait_healthy(max(1.0, deadline - time.monotonic()))
        self.nodes.append(node)
        return node


# -- waiting ---------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.25, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy (bounded); raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError) as exc:
            last = None
            error: Exception | None = exc
        else:
            error = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what} (last: {last!r}, error: {error!r})")
        time.sleep(interval)


# -- what an operator looks at ---------------------------------------------------------------------
def sidecar_url(node: Node, role: str) -> str:
    port = node.puller_port if role == "puller" else node.config_manager_port
    host = node.address if isinstance(node, NetnsNode) else "127.0.0.1"
    return f"http://{host}:{port}"


def get_json(url: str, *, token: str, timeout: float = 3.0) -> Any:
    """GET ``url`` with ``token`` (master's read token, or the fleet token for a sidecar)."""
    with httpx.Client(timeout=timeout, trust_env=False, headers={"Authorization": f"Bearer {token}"}) as client:
        response = client.get(url)
        response.raise_for_status()
        return response.json()


def sidecar_status(node: Node, role: str) -> dict[str, Any]:
    """The sidecar's own ``GET /v1/status``."""
    token = Path(node.processes[role].env["FLEET_TOKEN_FILE"]).read_text().strip()
    status: dict[str, Any] = get_json(sidecar_url(node, role) + "/v1/status", token=token)
    return status


def sidecar_metrics(node: Node, role: str) -> str:
    with httpx.Client(timeout=3.0, trust_env=False) as client:
        response = client.get(sidecar_url(node, role) + "/metrics")
        response.raise_for_status()
        return response.text


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, rest = key.partition("{")
        got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
        if sample == name and got == wanted:
            return float(value)
    return None


def fleetctl(fleet: LocalFleet, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the real fleetctl CLI against the fleet's master (wide terminal so tables are not cut)."""
    env = {
        **os.environ,
        "FLEETCTL_MASTER": fleet.master_url,
        "FLEETCTL_TOKEN": fleet.admin_token,
        "COLUMNS": "400",
        "NO_COLOR": "1",
    }
    cmd = [sys.executable, "-c", "from services.master.fleetctl import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def partial_version_problems(node: Node) -> list[str]:
    """Everything under ``LOCAL/<model>/`` that is not a canonical integer dir matching its manifest."""
    problems: list[str] = []
    for model_dir in sorted(p for p in node.model_dir.iterdir() if not p.name.startswith(".")):
        if not model_dir.is_dir():
            problems.append(f"{model_dir.name}: not a directory")
            continue
        for entry in sorted(model_dir.iterdir()):
            where = f"{node.hostname}:{model_dir.name}/{entry.name}"
            if not entry.is_dir() or not entry.name.isdigit() or str(int(entry.name)) != entry.name:
                problems.append(f"{where}: not a canonical version directory")
                continue
            mpath = manifest_path(node.model_dir, model_dir.name, int(entry.name))
            if not mpath.is_file():
                problems.append(f"{where}: no manifest")
                continue
            manifest = Manifest.read(mpath)
            expected = {o.name: o.size for o in manifest.objects if not o.name.endswith("/")}
            actual = {p.relative_to(entry).as_posix(): p.stat().st_size for p in entry.rglob("*") if p.is_file()}
            if actual != expected:
                problems.append(f"{where}: files {sorted(actual.items())} != manifest {sorted(expected.items())}")
    return problems
