"""The cluster view: the latest poll results merged per node and model, convergence and version skew.

Per node and model, the puller's and config_manager's ``ModelNodeStatus`` are merged: desired sets
(serve/keep/labels) and bucket/disk facts come from the puller, config/live facts from config_manager.
A node-model is *converged* when its AVAILABLE versions equal ``serve`` and the labels in the config
equal the desired labels. A model is converged when every healthy node is; the fleet when every model is.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from services.common.contracts import ModelNodeStatus
from services.master.poller import SidecarHealth
from services.master.registry import Registry, SidecarRecord
from services.master.state_guard import StateAlarm


class NodeModelView(ModelNodeStatus):
    """One model on one node, both sidecars' views merged (the puller's downloads included)."""

    converged: bool = False


class SidecarView(BaseModel):
    """Registration and debounced health of one sidecar."""

    role: str
    base_url: str
    software_version: str
    healthy: bool
    ever_healthy: bool
    stale: bool
    last_seen: float
    consecutive_failures: int
    last_poll_at: float | None
    last_success_at: float | None
    last_error: str | None
    ready: bool | None = None
    syncing: bool | None = None
    sidecar_last_error: str | None = None
    alarms: list[dict[str, Any]] = Field(default_factory=list)


class NodeView(BaseModel):
    hostname: str
    healthy: bool
    stale: bool
    sidecars: dict[str, SidecarView]
    models: dict[str, NodeModelView]


class ModelSummary(BaseModel):
    """Fleet-wide view of one model."""

    converged: bool
    healthy_nodes: int
    not_converged: list[str] = Field(default_factory=list, description="healthy nodes not converged")
    available_by_node: dict[str, list[int]] = Field(default_factory=dict)
    skew: bool = Field(description="healthy nodes serve different version sets")
    failed_on: dict[str, dict[str, str]] = Field(default_factory=dict)
    capacity_on: dict[str, list[int]] = Field(
        default_factory=dict, description="node → versions waiting for memory (RESOURCE_EXHAUSTED, not corrupt)"
    )


class ClusterView(BaseModel):
    polled_at: float | None
    age_seconds: float | None
    converged: bool
    nodes_total: int
    nodes_healthy: int
    nodes: list[NodeView]
    models: dict[str, ModelSummary]
    state_alarm: StateAlarm | None = Field(
        default=None, description="the desired-state document is missing or reset; the last good one rules"
    )


def merge_model(puller: ModelNodeStatus | None, config_manager: ModelNodeStatus | None) -> NodeModelView:
    """Merge the two sidecars' views of one model on one node."""
    desired = puller or config_manager or ModelNodeStatus()
    cm = config_manager or ModelNodeStatus()
    view = NodeModelView(
        serve=sorted(desired.serve),
        keep=sorted(desired.keep),
        labels=dict(desired.labels),
        remote_complete=puller.remote_complete if puller else None,
        remote_incomplete=puller.remote_incomplete if puller else None,
        on_disk=(puller.on_disk if puller and puller.on_disk is not None else cm.on_disk),
        in_config=cm.in_config,
        config_labels=cm.config_labels,
        live=cm.live,
        available=sorted(cm.available) if cm.available is not None else None,
        failed={**(puller.failed if puller else {}), **cm.failed},
        held=cm.held,
        capacity=cm.capacity,
        drift=sorted(set(desired.drift) | set(cm.drift)),
        downloads=puller.downloads if puller else [],
        problems=[*(puller.problems if puller else []), *cm.problems],
        traffic=cm.traffic,
    )
    view.converged = is_converged(view)
    return view


def is_converged(view: NodeModelView) -> bool:
    """AVAILABLE == serve and config labels == desired labels (nothing to serve and nothing reported = yes)."""
    if view.available is None:
        return not view.serve
    return set(view.available) == set(view.serve) and (view.config_labels or {}) == view.labels


def _sidecar_view(record: SidecarRecord, health: SidecarHealth, *, stale: bool) -> SidecarView:
    status = health.status
    return SidecarView(
        role=record.role,
        base_url=record.base_url,
        software_version=record.software_version,
        healthy=health.healthy,
        ever_healthy=health.ever_healthy,
        stale=stale,
        last_seen=record.last_seen,
        consecutive_failures=health.consecutive_failures,
        last_poll_at=health.last_poll_at,
        last_success_at=health.last_success_at,
        last_error=health.last_error,
        ready=status.ready if status else None,
        syncing=status.syncing if status else None,
        sidecar_last_error=status.last_error if status else None,
        alarms=[a.model_dump(mode="json") for a in status.alarms] if status else [],
    )


def build_node(
    hostname: str,
    registry: Registry,
    health: dict[tuple[str, str], SidecarHealth],
    *,
    now: float,
    records: list[SidecarRecord] | None = None,
) -> NodeView:
    """Merge one node's sidecars (``records``: the node's registrations, when the caller has them)."""
    sidecars: dict[str, SidecarView] = {}
    statuses: dict[str, dict[str, ModelNodeStatus]] = {}
    for record in records if records is not None else registry.for_host(hostname):
        h = health.get(record.key, SidecarHealth())
        sidecars[record.role] = _sidecar_view(record, h, stale=registry.is_stale(record, now=now))
        if h.status is not None:
            statuses[record.role] = h.status.models
    puller, cm = statuses.get("puller", {}), statuses.get("config_manager", {})
    models = {name: merge_model(puller.get(name), cm.get(name)) for name in sorted(set(puller) | set(cm))}
    return NodeView(
        hostname=hostname,
        healthy=bool(sidecars) and all(s.healthy for s in sidecars.values()),
        stale=any(s.stale for s in sidecars.values()),
        sidecars=sidecars,
        models=models,
    )


def summarize_models(nodes: list[NodeView]) -> dict[str, ModelSummary]:
    """Per model: convergence over healthy nodes, AVAILABLE versions per node, skew, failures."""
    names = sorted({m for node in nodes for m in node.models})
    healthy = [n for n in nodes if n.healthy]
    summaries: dict[str, ModelSummary] = {}
    for name in names:
        empty = NodeModelView(converged=True)
        per_node = {n.hostname: n.models.get(name, empty) for n in healthy}
        available = {h: sorted(v.available or []) for h, v in per_node.items()}
        summaries[name] = ModelSummary(
            converged=all(v.converged for v in per_node.values()),
            healthy_nodes=len(per_node),
            not_converged=sorted(h for h, v in per_node.items() if not v.converged),
            available_by_node=available,
            skew=len({tuple(v) for v in available.values()}) > 1,
            failed_on={n.hostname: n.models[name].failed for n in nodes if name in n.models and n.models[name].failed},
            capacity_on={
                n.hostname: [c.version for c in n.models[name].capacity]
                for n in nodes
                if name in n.models and n.models[name].capacity
            },
        )
    return summaries


def build_view(
    registry: Registry, health: dict[tuple[str, str], SidecarHealth], *, polled_at: float | None
) -> ClusterView:
    """The whole cluster view from the registry and the latest poll results."""
    now = time.time()
    by_host: dict[str, list[SidecarRecord]] = {}
    for record in registry.sidecars():
        by_host.setdefault(record.hostname, []).append(record)
    nodes = [build_node(h, registry, health, now=now, records=rs) for h, rs in sorted(by_host.items())]
    models = summarize_models(nodes)
    return ClusterView(
        polled_at=polled_at,
        age_seconds=round(now - polled_at, 3) if polled_at is not None else None,
        converged=all(m.converged for m in models.values()),
        nodes_total=len(nodes),
        nodes_healthy=sum(n.healthy for n in nodes),
        nodes=nodes,
        models=models,
    )
