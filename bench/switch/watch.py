"""What bench/switch watches on the nodes: when a version became AVAILABLE, its rejection, its warm-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.common.contracts.local import FailedDocument, failed_path
from services.common.errors import TFServingError
from services.common.tfs import TFServingClient, VersionState
from services.local_fleet.fleet import Node

WARMUP_METRIC = ":tensorflow:serving:model_warmup_records_read"
POLL_SECONDS = 0.1


async def watch_available(
    nodes: Sequence[Node], model: str, *, version: int, clock_zero: float, timeout: float
) -> dict[str, float]:
    """When each node first lists ``version`` AVAILABLE in the served model (seconds since ``clock_zero``)."""
    seen: dict[str, float] = {}
    clients = {n.hostname: TFServingClient(n.grpc_target) for n in nodes}

    async def poll(host: str) -> None:
        try:
            statuses = await clients[host].get_model_status(model, timeout=2.0)
        except TFServingError:
            return
        if any(s.version == version and s.state == VersionState.AVAILABLE for s in statuses):
            seen.setdefault(host, time.monotonic() - clock_zero)

    deadline = time.monotonic() + timeout
    try:
        while len(seen) < len(nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{model}/{version} not AVAILABLE everywhere within {timeout}s: {seen}")
            await asyncio.gather(*(poll(h) for h in clients if h not in seen))
            await asyncio.sleep(POLL_SECONDS)
    finally:
        for client in clients.values():
            await client.close()
    return seen


def wait_rejected(nodes: Sequence[Node], model: str, *, version: int, timeout: float) -> dict[str, str]:
    """Each node's failed.json entry for ``version`` once every node has one (its message)."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(nodes):
        for node in nodes:
            path = failed_path(node.model_dir)
            entry = FailedDocument.read(path).find(model, version) if path.exists() else None
            if entry is not None:
                found[node.hostname] = f"{entry.error_code}: {entry.message}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model}/{version} not rejected everywhere within {timeout}s: {found}")
        time.sleep(0.2)
    return found


def warmup_records_replayed(node: Node, model: str, *, version: int) -> int:
    """Warm-up records the node's model server replayed loading ``version`` for the served model."""
    path = str(node.model_dir / model / str(version))
    url = f"http://127.0.0.1:{node.rest_port}/monitoring/prometheus/metrics"
    page = httpx.get(url, timeout=5.0, trust_env=False).text
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if family.name == WARMUP_METRIC and sample.labels == {"model_path": path, "status": "OK"}:
                return int(sample.value)
    return 0
