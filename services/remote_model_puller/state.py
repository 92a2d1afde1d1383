"""Everything a running puller knows between passes, owned in one place: :class:`PullerState`.

The sync pass (:mod:`.sync`) and the installer of one version (:mod:`.install`) change it; the status
endpoint (:mod:`.status`) and ``/healthz`` read it. Alarms are derived here from what the state holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from services.common.completeness import BucketScan
from services.common.contracts import Alarm
from services.common.contracts.base import utcnow
from services.remote_model_puller.download import Progress
from services.remote_model_puller.failures import FailedVersions
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.plan import Plan

Key = tuple[str, int]


@dataclass
class PullerState:
    """What the status endpoint shows; changed by the sync pass and the installer only."""

    failures: FailedVersions
    plan: Plan | None = None
    scan: BucketScan | None = None
    installed: dict[str, dict[int, str]] = field(default_factory=dict)
    downloads: dict[Key, Progress] = field(default_factory=dict)
    #: Versions that did not start for lack of disk space (retried every pass).
    blocked: dict[Key, str] = field(default_factory=dict)
    #: Installed versions that failed the start-up size check (re-downloaded if the bucket has them).
    startup_problems: dict[Key, str] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    document_generation: int | None = None
    document_error: str | None = None
    listing_pages: int = 0
    listing_objects: int = 0
    listing_seconds: float = 0.0
    #: The time the completeness rule was applied at (quiet periods are relative to it).
    scanned_at: datetime = field(default_factory=utcnow)
    passes_completed: int = 0

    @classmethod
    def for_volume(cls, local_root: Path) -> PullerState:
        return cls(failures=FailedVersions(local_root))

    def version_alarms(self) -> list[Alarm]:
        """One alarm per version that did not start (disk) or failed (download or install)."""
        alarms = [
            Alarm(kind="disk-full", model=m, message=f"version {v}: {why}", since=utcnow(), severity="critical")
            for (m, v), why in sorted(self.blocked.items())
        ]
        alarms += [
            Alarm(kind=failure.kind, model=m, message=f"version {v}: {failure.reason}", since=utcnow())
            for (m, v), failure in sorted(self.failures.entries.items())
        ]
        return alarms

    def set_alarms(self, alarms: list[Alarm], metrics: PullerMetrics) -> None:
        self.alarms = alarms
        metrics.set_alarms(alarms)
