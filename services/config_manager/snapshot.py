"""What the latest reconcile step saw and did: the source of ``GET /v1/status`` and of GC decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.common.contracts import LocalModelTarget
from services.common.tfs import VersionStatus
from services.config_manager.capacity import CapacityWait
from services.config_manager.gc import GcReport
from services.config_manager.planner import ModelPlan


@dataclass(frozen=True)
class Snapshot:
    """One consistent picture of a node. Replace-only (``dataclasses.replace``): a reader holding the
    reference (``/v1/status``, GC) never sees one half-updated."""

    targets: dict[str, LocalModelTarget] | None = None
    desired_error: str | None = None
    desired_generation: int | None = None
    on_disk: dict[str, frozenset[int]] = field(default_factory=dict)
    live: dict[str, list[VersionStatus] | None] = field(default_factory=dict)
    plans: dict[str, ModelPlan] = field(default_factory=dict)
    failed: dict[str, dict[int, str]] = field(default_factory=dict)
    capacity: dict[str, dict[int, CapacityWait]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    config_text: str = ""
    config_hash: str = ""
    config_applied: bool = False
    last_reload_at: datetime | None = None
    last_reload_seconds: float | None = None
    last_reload_result: str | None = None
    reloads: int = 0
    gc: GcReport = field(default_factory=GcReport)
    free_bytes: int | None = None
    tfserving_reachable: bool = False
    restart_reason: str | None = None
    volume_error: str | None = None
