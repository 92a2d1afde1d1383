"""``GET /v1/status``: the puller's view of each model, built from the sync worker's state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.common.contracts import DownloadProgress, ModelNodeStatus, SidecarStatus
from services.common.registration import Registrar, software_version
from services.remote_model_puller.sync import SyncWorker

if TYPE_CHECKING:  # google-cloud-pubsub is imported only when events are configured
    from services.remote_model_puller.events import EventSubscriber


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def events_status(events: EventSubscriber | None) -> dict[str, object]:
    """Mode (events / fallback / polling), the subscription, lag and events handled."""
    if events is None:
        return {"mode": "polling"}
    coalescer = events.coalescer
    return {
        "mode": events.mode,
        "subscription": events.subscription,
        "error": events.error,
        "handled": dict(coalescer.handled),
        "waiting": len(coalescer.waiting),
        "oldest_waiting_seconds": round(coalescer.oldest_waiting_seconds(), 3),
        "last_lag_seconds": coalescer.last_lag_seconds,
        "fell_behind": events.behind,
    }


def build_status(
    worker: SyncWorker, *, ready: bool, registrar: Registrar | None, events: EventSubscriber | None = None
) -> SidecarStatus:
    """Per model: complete remote versions, local versions, serve/keep, drift, downloads, problems."""
    state = worker.state
    models: dict[str, ModelNodeStatus] = {}
    plan_models = state.plan.models if state.plan is not None else {}
    names = (
        set(plan_models)
        | set(state.installed)
        | {m for m, _ in state.downloads}
        | {m for m, _ in state.failures.entries}
    )
    for name in sorted(names):
        plan = plan_models.get(name)
        status = ModelNodeStatus(on_disk=sorted(state.installed.get(name, {})))
        if plan is not None:
            status.serve, status.keep, status.labels = plan.target.serve, plan.target.keep, plan.target.labels
            status.remote_complete = plan.remote_complete
            status.remote_incomplete = plan.remote_incomplete
            status.drift = plan.drift
            status.problems = list(plan.problems)
            if plan.waiting_for:
                status.problems.append(f"waiting for versions not complete in the bucket: {plan.waiting_for}")
            if plan.frozen:
                status.problems.append("frozen by the mass-removal guard")
        status.failed = {str(v): why for v, why in sorted(state.failures.reasons(name).items())}
        status.problems += [f"version {v}: {why}" for (m, v), why in state.blocked.items() if m == name]
        status.downloads = [
            DownloadProgress(
                version=v,
                bytes_done=p.bytes_done,
                bytes_total=p.bytes_total,
                rate_bytes_per_second=round(p.rate(), 1),
                started_at=_ts(p.started_at),
            )
            for (m, v), p in sorted(state.downloads.items())
            if m == name
        ]
        models[name] = status
    details: dict[str, object] = {
        "passes_completed": state.passes_completed,
        "document_generation": state.document_generation,
        "document_error": state.document_error,
        "listing": {"pages": state.listing_pages, "objects": state.listing_objects, "seconds": state.listing_seconds},
        "consecutive_failures": worker.consecutive_failures,
        "ignored_objects": len(state.scan.ignored) if state.scan is not None else 0,
        "events": events_status(events),
    }
    if registrar is not None:
        details["registered"] = registrar.registered
        details["registration_error"] = registrar.last_error
    return SidecarStatus(
        hostname=worker.settings.hostname,
        role="puller",
        software_version=software_version(),
        ready=ready,
        syncing=worker.running,
        last_sync_at=_ts(worker.last_run_at),
        last_success_at=_ts(worker.last_success_at),
        last_error=worker.last_error,
        alarms=state.alarms,
        models=models,
        details=details,
    )
