"""master's domain facade: the registry, the poller, the bucket store and the cluster operations together.

Plain Python (no FastAPI): the API layer maps requests onto these methods and errors onto problem+json.
"""

from __future__ import annotations

import logging
import math
import time

from services.common.contracts import Registration
from services.common.errors import FleetError, Forbidden, NotFound, Unavailable
from services.master.addresses import SidecarAddresses
from services.master.cluster import ClusterView, NodeView, build_node, build_view
from services.master.desired import DesiredStore
from services.master.fanout import OPERATION_PATHS, OperationResult, fan_out, participants
from services.master.metrics import MasterMetrics
from services.master.poller import Poller
from services.master.registry import Registry, SidecarRecord
from services.master.settings import Settings
from services.master.wire import SidecarClient

logger = logging.getLogger(__name__)


class NodeCallFailed(FleetError):
    """A healthy node's sidecar refused an operation (answered with an error status)."""

    status_code = 502
    slug = "node-call-failed"
    title = "Node refused the operation"


class Fleet:
    """Everything master knows and does, behind one object the API layer holds."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: Registry,
        poller: Poller,
        store: DesiredStore,
        client: SidecarClient,
        metrics: MasterMetrics,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.poller = poller
        self.store = store
        self.client = client
        self.metrics = metrics
        self.addresses = SidecarAddresses(settings.sidecar_addresses)

    @property
    def retry_after(self) -> int:
        """Seconds until the next poll may bring a node back: the poll interval, at least 1 s."""
        return max(1, math.ceil(self.settings.poll_interval_seconds))

    async def register(self, registration: Registration) -> SidecarRecord:
        """Upsert a sidecar; new or changed sidecars are on disk before this returns. A base URL outside
        ``FLEET_SIDECAR_ADDRESSES`` is refused (403): master never calls an arbitrary URL."""
        refusal = self.addresses.refusal(registration.hostname, registration.base_url)
        if refusal is not None:
            logger.warning(
                "registration refused: base URL %s: %s",
                registration.base_url,
                refusal,
                extra={"node": registration.hostname, "role": registration.role},
            )
            raise Forbidden(f"base URL {registration.base_url!r} refused: {refusal}", hostname=registration.hostname)
        record, changed = self.registry.upsert(registration)
        self.metrics.registrations.labels(role=registration.role).inc()
        if changed:
            await self.registry.save()
            self.poller.trigger(record.hostname)
        return record

    def view(self) -> ClusterView:
        """The cluster view from the latest poll results."""
        last = self.poller.last_pass
        view = build_view(self.registry, self.poller.health, polled_at=last.finished_at if last else None)
        view.state_alarm = self.store.guard.alarm
        return view

    def served_models(self) -> set[str]:
        """Models some node serves or holds, per the latest polls (they stay retirable once gone from the bucket)."""
        served: set[str] = set()
        for node in self.view().nodes:
            served |= {name for name, entry in node.models.items() if entry.available or entry.serve}
        return served

    async def refreshed_view(self) -> ClusterView:
        """Poll every sidecar now (within about one node timeout), then build the view."""
        await self.poller.poll_all()
        return self.view()

    def node(self, hostname: str) -> NodeView:
        """One node (404 when unknown)."""
        if not self.registry.for_host(hostname):
            raise NotFound(f"node {hostname!r} is not registered", hostname=hostname)
        return build_node(hostname, self.registry, self.poller.health, now=time.time())

    def is_healthy(self, hostname: str) -> bool:
        return bool(self.poller.host_health(hostname))

    async def cluster_operation(self, operation: str) -> OperationResult:
        """Trigger ``operation`` on every registered node concurrently (unhealthy ones are tried too)."""
        result = await fan_out(
            operation,
            self.registry.sidecars(),
            self.client,
            node_timeout=self.settings.node_timeout_seconds,
            concurrency=self.settings.poll_concurrency,
            is_healthy=self.is_healthy,
        )
        self.metrics.operations.labels(operation=operation, result="ok" if result.ok else "partial").inc()
        logger.info(
            "cluster %s: %s of %s nodes ok",
            operation,
            result.nodes_ok,
            result.nodes_total,
            extra={"operation": operation},
        )
        return result

    async def node_operation(self, operation: str, hostname: str) -> OperationResult:
        """Trigger ``operation`` on one node: 404 unknown, 503 + Retry-After when unhealthy or unreachable."""
        records = self.registry.for_host(hostname)
        if not records:
            raise NotFound(f"node {hostname!r} is not registered", hostname=hostname)
        chosen = participants(operation, records)
        if not chosen:
            roles = ", ".join(sorted(OPERATION_PATHS[operation]))
            raise NotFound(f"node {hostname!r} has no sidecar for {operation} ({roles})", hostname=hostname)
        if not self.is_healthy(hostname):
            self.metrics.operations.labels(operation=operation, result="unhealthy").inc()
            raise Unavailable(
                f"node {hostname} is unhealthy, retry in {self.retry_after} s",
                retry_after=self.retry_after,
                hostname=hostname,
            )
        result = await fan_out(
            operation,
            chosen,
            self.client,
            node_timeout=self.settings.node_timeout_seconds,
            concurrency=self.settings.poll_concurrency,
            is_healthy=self.is_healthy,
        )
        self.metrics.operations.labels(operation=operation, result="ok" if result.ok else "failed").inc()
        if result.ok:
            return result
        failures = [r for node in result.nodes for r in node.results if not r.ok]
        summary = "; ".join(f"{r.role}: {r.error}" for r in failures)
        if any(r.status_code is None for r in failures):
            raise Unavailable(
                f"node {hostname} did not answer ({summary}), retry in {self.retry_after} s",
                retry_after=self.retry_after,
                hostname=hostname,
            )
        raise NodeCallFailed(f"node {hostname} refused {operation}: {summary}", hostname=hostname)
