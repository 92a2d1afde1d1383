"""What a pass concludes about versions that did not become AVAILABLE, and what it does about each.

- **failed** (bad bytes: END with an error, or stuck loading): recorded in failed.json with tfserving's
  code and message, never tried again until the bytes change;
- **capacity** (RESOURCE_EXHAUSTED: no memory while the old version is loaded): held out of the config,
  not in failed.json, tried again when memory frees (:mod:`services.config_manager.capacity`);
- **died** (tfserving restarted while it was loading a candidate): re-applied once; the second death
  records it failed ("server died while loading"), so a version that kills the process cannot
  crash-loop a node.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from services.common.tfs import ModelEntry, VersionState, VersionStatus
from services.config_manager.capacity import RESOURCE_EXHAUSTED, CapacityWaits
from services.config_manager.golden import candidate_of
from services.config_manager.live import Statuses
from services.config_manager.loads import LoadTracker
from services.config_manager.localdisk import GENERATED_SUFFIX, FailedStore, ManifestCache
from services.config_manager.metrics import Metrics

logger = logging.getLogger(__name__)

#: tfserving restarts while a version was loading before that version is recorded failed.
DEATHS_BEFORE_FAILED = 2

Fingerprints = dict[str, dict[int, str | None]]
VersionKey = tuple[str, int]


class Verdicts:
    """Records failed, capacity-bound and server-killing versions (writes failed.json: call off the loop)."""

    def __init__(
        self,
        *,
        root: Path,
        tracker: LoadTracker,
        failed: FailedStore,
        capacity: CapacityWaits,
        metrics: Metrics,
        manifests: ManifestCache | None = None,
    ) -> None:
        self.root = root
        self.tracker = tracker
        self.failed = failed
        self.capacity = capacity
        self.metrics = metrics
        self.manifests = manifests
        #: Candidates during whose load tfserving died, and how often.
        self.deaths: dict[VersionKey, int] = {}

    def judge_loads(self, current: Sequence[ModelEntry], live: Statuses, fingerprints: Fingerprints) -> None:
        """Record every version of the applied config that failed to load (or waits for memory)."""
        loaded_now = loaded_versions(live)
        self.deaths = {key: n for key, n in self.deaths.items() if key not in loaded_now}
        for entry in current:
            # A golden-check candidate's load speaks for the model it stands for.
            model = candidate_of(entry.name) or entry.name
            for found in self.tracker.failures(entry.name, live.get(entry.name), entry.versions):
                failure = replace(found, model=model)
                fingerprint = fingerprints.get(model, {}).get(failure.version)
                if self.failed.failed_versions(model, {failure.version: fingerprint}):
                    continue
                if failure.code == RESOURCE_EXHAUSTED:
                    # Out of memory is not bad bytes: wait for memory, do not bar the version.
                    if failure.version not in self.capacity.waiting(model):
                        self.capacity.record(
                            model=failure.model,
                            version=failure.version,
                            message=failure.message,
                            version_dir=self.root / failure.model / str(failure.version),
                            fingerprint=fingerprint,
                            loaded_now=loaded_now,
                        )
                        self.metrics.capacity_failures.inc()
                    continue
                logger.error(
                    "version failed to load, dropping it from models.config: %s: %s",
                    failure.code,
                    failure.message,
                    extra={"model": failure.model, "version": failure.version, "code": failure.code},
                )
                self.failed.record(
                    model=failure.model,
                    version=failure.version,
                    code=failure.code,
                    message=failure.message,
                    fingerprint=fingerprint,
                )
                self.metrics.failed_loads.inc()
                if fingerprint is not None and fingerprint.endswith(GENERATED_SUFFIX):
                    self._drop_generated(failure.model, failure.version)

    def _drop_generated(self, model: str, version: int) -> None:
        """The load failed with a generated warm-up file: remove it, so the version (its bytes alone) is
        tried again without it; the failure stays recorded against the generated file only."""
        if self.manifests is None:
            return
        for path in self.manifests.generated_files(model, version):
            logger.warning(
                "generated warm-up file failed the load; removed, the version is retried without it",
                extra={"model": model, "version": version, "path": str(path)},
            )
            path.unlink(missing_ok=True)

    def count_deaths(self, lost: set[VersionKey], fingerprints: Fingerprints) -> None:
        """tfserving restarted: candidates it was still loading count a death; the second one bars them.

        A version whose load kills the process (a crash in a custom op, an OOM kill) would otherwise be
        re-applied after every restart and take the node down again and again.
        """
        for name, version in sorted(lost):
            model = candidate_of(name) or name
            key = (model, version)
            self.deaths[key] = self.deaths.get(key, 0) + 1
            logger.warning(
                "tfserving restarted while loading a version (%s time); it comes back from the known-good "
                "models.config and the version is re-applied",
                self.deaths[key],
                extra={"model": model, "version": version},
            )
            if self.deaths[key] < DEATHS_BEFORE_FAILED:
                continue
            del self.deaths[key]
            self.failed.record(
                model=model,
                version=version,
                code="UNAVAILABLE",
                message=f"server died while loading: tfserving restarted {DEATHS_BEFORE_FAILED} times while "
                "this version was loading; not re-applied until its bytes change",
                fingerprint=fingerprints.get(model, {}).get(version),
            )
            self.metrics.failed_loads.inc()


def states(statuses: Sequence[VersionStatus] | None) -> dict[int, VersionState] | None:
    """Version → state of one model's GetModelStatus (None when tfserving does not know the model)."""
    if statuses is None:
        return None
    return {s.version: s.state for s in statuses}


def loaded_versions(live: Statuses) -> frozenset[VersionKey]:
    """Every (model, version) tfserving reports AVAILABLE."""
    return frozenset(
        (model, s.version)
        for model, statuses in live.items()
        for s in statuses or ()
        if s.state == VersionState.AVAILABLE
    )


def lost_candidates(current: Sequence[ModelEntry], before: Statuses, now: Statuses) -> set[VersionKey]:
    """Versions of the applied config that were not AVAILABLE and that tfserving no longer lists: a
    running server never forgets a version of its config, so it restarted (from the known-good file)."""
    lost: set[VersionKey] = set()
    for entry in current:
        was_loaded = {
            v for v, state in (states(before.get(entry.name)) or {}).items() if state == VersionState.AVAILABLE
        }
        listed = {s.version for s in now.get(entry.name) or ()}
        lost.update((entry.name, v) for v in entry.versions if v not in was_loaded and v not in listed)
    return lost
