"""``GET /v1/status`` of config_manager, built from the reconciler's latest :class:`Snapshot`."""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.contracts import Alarm, CapacityShortfall, LiveVersion, ModelNodeStatus, SidecarStatus
from services.common.tfs import VersionState
from services.config_manager import SERVICE_NAME
from services.config_manager.reconciler import Reconciler
from services.config_manager.snapshot import Snapshot

ROLE = "config_manager"


def _when(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def model_status(snap: Snapshot, model: str) -> ModelNodeStatus:
    """One model as this node's config_manager sees it."""
    target = (snap.targets or {}).get(model)
    plan = snap.plans.get(model)
    statuses = snap.live.get(model)
    entry = plan.entry if plan else None
    problems = list(plan.notes) if plan else []
    problems.extend(snap.problems.get(model, []))
    return ModelNodeStatus(
        serve=list(target.serve) if target else [],
        keep=list(target.keep) if target else [],
        labels=dict(target.labels) if target else {},
        on_disk=sorted(snap.on_disk.get(model, frozenset())),
        in_config=list(entry.versions) if entry else [],
        config_labels=dict(entry.labels) if entry else {},
        live=[
            LiveVersion(version=s.version, state=s.state.name, error_code=s.error_code, error_message=s.error_message)
            for s in statuses or []
        ],
        available=sorted(s.version for s in statuses or [] if s.state == VersionState.AVAILABLE),
        failed={str(v): reason for v, reason in sorted(snap.failed.get(model, {}).items())},
        held=list(plan.held) if plan else [],
        capacity=[
            CapacityShortfall(version=v, bytes_needed=w.bytes_needed, message=w.message, since=_when(w.since))
            for v, w in sorted(snap.capacity.get(model, {}).items())
        ],
        problems=problems,
    )


def _alarms(reconciler: Reconciler, snap: Snapshot) -> list[Alarm]:
    alarms: list[Alarm] = []
    if not snap.tfserving_reachable and reconciler.runs:
        alarms.append(
            Alarm(
                kind="tfserving-unreachable",
                message=f"tfserving at {reconciler.settings.tensorflow_serving_grpc_target} does not answer; "
                "nothing is changed or deleted until it does",
                severity="critical",
            )
        )
    if snap.volume_error:
        alarms.append(
            Alarm(
                kind="volume-unreadable",
                message=f"{snap.volume_error}; models.config and tfserving are left as they are",
                severity="critical",
            )
        )
    if snap.desired_error and snap.targets is not None:
        alarms.append(Alarm(kind="desired-unreadable", message=snap.desired_error))
    if snap.gc.low_disk:
        alarms.append(Alarm(kind="low-disk", message="; ".join(snap.gc.problems), severity="critical"))
    alarms.extend(
        Alarm(kind="capacity", model=model, message=f"version {version} waits for memory: {wait.reason}")
        for model, waits in sorted(snap.capacity.items())
        for version, wait in sorted(waits.items())
    )
    alarms.extend(
        Alarm(kind="held-change", model=model, message=held.reason)
        for model, plan in sorted(snap.plans.items())
        for held in plan.held
    )
    return alarms


def build_status(reconciler: Reconciler, *, hostname: str, software_version: str) -> SidecarStatus:
    """The whole ``GET /v1/status`` payload."""
    snap = reconciler.snapshot
    models = sorted(set(snap.plans) | set(snap.targets or {}))
    return SidecarStatus(
        hostname=hostname,
        role=ROLE,
        software_version=software_version,
        ready=is_ready(reconciler),
        syncing=reconciler.running,
        last_sync_at=_when(reconciler.last_run_at),
        last_success_at=_when(reconciler.last_success_at),
        last_error=reconciler.last_error or snap.desired_error,
        alarms=_alarms(reconciler, snap),
        models={model: model_status(snap, model) for model in models},
        details={
            "service": SERVICE_NAME,
            "config_file": str(reconciler.config_file),
            "config_hash": snap.config_hash,
            "config_applied": snap.config_applied,
            "tfserving_target": reconciler.settings.tensorflow_serving_grpc_target,
            "tfserving_reachable": snap.tfserving_reachable,
            "desired_generation": snap.desired_generation,
            "desired_error": snap.desired_error,
            "last_reload_at": snap.last_reload_at.isoformat() if snap.last_reload_at else None,
            "last_reload_seconds": snap.last_reload_seconds,
            "last_reload_result": snap.last_reload_result,
            "reloads": snap.reloads,
            "restart_detected": snap.restart_reason,
            "volume_error": snap.volume_error,
            "free_bytes": snap.free_bytes,
            "low_disk": snap.gc.low_disk,
            "low_disk_free_bytes": reconciler.settings.low_disk_free_bytes,
            "gc_removed": [f"{c.model}/{c.version}: {c.reason}" for c in snap.gc.removed],
            "gc_problems": snap.gc.problems,
        },
    )


def is_ready(reconciler: Reconciler) -> bool:
    """tfserving reachable and the config applied."""
    snap = reconciler.snapshot
    return snap.tfserving_reachable and snap.config_applied
