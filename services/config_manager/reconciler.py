"""The reconcile loop: gather → plan → lint → write models.config → reload → wait for AVAILABLE → GC.

One pass runs steps until the config stops changing (a roll takes two: add the new version, then,
once it is AVAILABLE, drop the old one and move labels). tfserving is asked first: while it cannot
be reached the pass stops before anything is written or deleted, and the worker backs off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from services.common.contracts import LocalModelTarget
from services.common.contracts.base import is_valid_model_name, utcnow
from services.common.contracts.local import desired_intent_path
from services.common.errors import TFServingError, VolumeUnreadable
from services.common.tfs import ModelEntry, render_config
from services.common.worker import PeriodicWorker
from services.config_manager.capacity import CapacityWaits
from services.config_manager.configfile import ConfigFile, config_hash, known_good, safe_entries
from services.config_manager.gc import GarbageCollector, merge_targets, plan_gc
from services.config_manager.golden import GoldenGate, candidate_of
from services.config_manager.live import LiveView, Statuses, TFServingUnreachable
from services.config_manager.loads import LoadTracker
from services.config_manager.localdisk import (
    DesiredReader,
    FailedStore,
    ManifestCache,
    free_bytes,
    prepare_volume,
    scan_models,
)
from services.config_manager.metrics import Metrics
from services.config_manager.planner import ModelObservation, available_versions, plan_config
from services.config_manager.settings import Settings
from services.config_manager.snapshot import Snapshot
from services.config_manager.verdicts import Verdicts, loaded_versions, lost_candidates, states

logger = logging.getLogger(__name__)


class Reconciler(PeriodicWorker):
    """Keeps models.config and tfserving in line with desired.json and the model volume."""

    name = "config_manager.reconcile"

    def __init__(
        self,
        settings: Settings,
        live: LiveView,
        metrics: Metrics,
        *,
        free_space: Callable[[Path], int] = free_bytes,
        clock: Callable[[], float] = time.monotonic,
        scan: Callable[[Path], dict[str, frozenset[int]]] = scan_models,
    ) -> None:
        super().__init__(interval=settings.sync_interval_seconds, max_backoff=min(settings.sync_interval_seconds, 30))
        self.settings = settings
        self.root = settings.local_model_directory
        self.scan = scan
        self.config_file = settings.tensorflow_serving_config_file
        self.live = live
        self.metrics = metrics
        self.desired = DesiredReader(self.root)
        self.desired_intent = DesiredReader(self.root, path=desired_intent_path(self.root))
        self.manifests = ManifestCache(self.root)
        self.failed = FailedStore(self.root)
        self.tracker = LoadTracker(
            load_timeout=settings.load_timeout_seconds,
            start_grace=settings.load_start_grace_seconds,
            readd_delay=settings.readd_delay_seconds,
            clock=clock,
        )
        self.capacity = CapacityWaits(retry_seconds=settings.capacity_retry_seconds, clock=clock)
        self.verdicts = Verdicts(
            root=self.root,
            tracker=self.tracker,
            failed=self.failed,
            capacity=self.capacity,
            metrics=metrics,
            manifests=self.manifests,
        )
        self.gc = GarbageCollector(self.root, low_disk_free_bytes=settings.low_disk_free_bytes, free_bytes=free_space)
        self.gate = GoldenGate(self.root, live.client, self.failed, timeout=settings.golden_timeout_seconds)
        self.snapshot = Snapshot()
        self.applied: list[ModelEntry] | None = None
        self.config = ConfigFile(self.config_file, metrics)
        self._reapply = True  # first contact, and after tfserving was unreachable: apply and verify again
        #: The known-good entries last written to models.config (what a restarted tfserving loads).
        self._file_entries: list[ModelEntry] = []
        #: What tfserving's own config holds now, when it differs from ``applied`` (after a restart).
        self._server_config: list[ModelEntry] | None = None

    def prepare(self) -> None:
        """Create the volume's ``.fleet/`` and a first models.config; read failed.json."""
        prepare_volume(self.root, self.config_file)
        self.failed.load()
        self.gc.empty_trash()

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """One pass (``targets`` is accepted for the worker's API; every pass looks at every model)."""
        try:
            await self._steps()
            cooling = self.tracker.cooling_left()
            if cooling > 0 and any(p.waits_for_readd for p in self.snapshot.plans.values()):
                # A failed version whose bytes changed waits for tfserving's file-system poll.
                await asyncio.sleep(cooling)
                await self._steps()
            if self.settings.gc_enabled:
                # rmtree of whole versions (gigabytes) must not stall health and status.
                await asyncio.to_thread(self.collect_garbage)
        except TFServingUnreachable:
            self._reapply = True
            self.snapshot = replace(self.snapshot, tfserving_reachable=False)
            self.metrics.tfserving_up.set(0)
            self.metrics.reconciles.labels("unreachable").inc()
            raise
        except VolumeUnreadable as exc:
            # Nothing was written or reloaded: a partial view of the volume must not change what serves.
            self.snapshot = replace(self.snapshot, volume_error=exc.detail)
            self.metrics.reconciles.labels("volume_unreadable").inc()
            logger.error("model volume unreadable, models.config and tfserving left as they are: %s", exc.detail)
            raise
        except Exception:
            self.metrics.reconciles.labels("error").inc()
            raise
        self.snapshot = replace(self.snapshot, volume_error=None)
        self.metrics.reconciles.labels("ok").inc()
        self.metrics.good_reconcile()

    async def _steps(self) -> None:
        for _ in range(self.settings.max_steps_per_pass):
            changed = await self.step()
            self.note_progress()  # a pass of several reloads is slow, not stuck (/healthz)
            if not changed:
                break

    async def step(self) -> bool:
        """Plan and apply once; True when the config changed (another step may follow)."""
        # Disk I/O runs off the event loop (health and status answer while a slow volume is read).
        reading = await asyncio.to_thread(self.desired.read)
        targets = _valid_targets(reading.document.models) if reading.document else None
        on_disk = await asyncio.to_thread(self.scan, self.root)
        applied = self.applied if self.applied is not None else self.config.entries_at_start()
        # Golden-check candidates (``_candidate.<model>``) are loaded beside the models, never planned.
        current = [entry for entry in applied if candidate_of(entry.name) is None]
        names = set(targets or {}) | {entry.name for entry in current}
        live = await self.live.statuses(names | {entry.name for entry in applied})
        force = self._reapply
        previous_live = self.snapshot.live
        restart = self._detect_restart(applied, live)
        fingerprints = await asyncio.to_thread(self._fingerprints, names, on_disk)
        lost = lost_candidates(applied, previous_live, live)
        if restart or (self._reapply and lost):
            force = True
            # tfserving came back from the known-good file: the candidates it was loading re-apply once.
            self._server_config = [e for e in self._file_entries if e.name in {c.name for c in current}]
            await asyncio.to_thread(self.verdicts.count_deaths, lost, fingerprints)
        await asyncio.to_thread(self.verdicts.judge_loads, applied, live, fingerprints)
        await asyncio.to_thread(self.failed.prune, on_disk, fingerprints)
        await asyncio.to_thread(self.gate.read, names)
        await asyncio.to_thread(self.gate.forget_stale_rejections, fingerprints)
        self.capacity.release(loaded_versions(live), fingerprints)
        self.capacity.prune(on_disk)
        for m in sorted(names):
            await self.live.read_disk_signatures(m, self.root / m, on_disk.get(m, frozenset()), fingerprints[m])
        for entry in current:
            loaded = available_versions(states(live.get(entry.name))) & on_disk.get(entry.name, frozenset())
            await self.live.read_signatures(entry.name, loaded, fingerprints[entry.name])
        self.live.forget_signatures(on_disk)
        current_by_name = {entry.name: entry for entry in current}
        failed = {m: self.failed.failed_versions(m, fingerprints[m]) for m in names}
        capacity = {m: self.capacity.waiting(m) for m in names}
        vetting = {
            m: self.gate.pending(
                m,
                wanted=[
                    v for v in target.serve if v in on_disk.get(m, ()) and v not in failed[m] and v not in capacity[m]
                ],
                served=current_by_name[m].versions if m in current_by_name else (),
                fingerprints=fingerprints[m],
            )
            for m, target in (targets or {}).items()
            if target.enabled
        }
        plans = plan_config(
            ModelObservation(
                name=m,
                base_path=str(self.root / m),
                target=(targets or {}).get(m),
                on_disk=on_disk.get(m, frozenset()),
                # A version waiting for memory stays out of the config like a failed one (old keeps serving).
                failed={**{v: w.reason for v, w in capacity[m].items()}, **failed[m]},
                live=states(live.get(m)),
                current=current_by_name.get(m),
                signatures=self.live.cached_signatures(m, fingerprints[m]),
                cooling=self.tracker.cooling(m),
                vetting=vetting.get(m, {}),
            )
            for m in names
        )
        entries, problems = safe_entries(plans, current_by_name)
        text = await self._write_known_good(entries, live)
        candidates = await asyncio.to_thread(self.gate.candidate_entries, vetting)
        entries = entries + candidates
        changed = force or entries != self.applied
        snap = replace(
            self.snapshot,
            targets=targets,
            desired_error=reading.error,
            desired_generation=reading.document.generation if reading.document else None,
            on_disk=on_disk,
            live=live,
            plans={p.name: p for p in plans},
            failed={m: f for m, f in failed.items() if f},
            capacity={m: c for m, c in capacity.items() if c},
            problems=problems,
            config_text=text,
            config_hash=config_hash(text),
            tfserving_reachable=True,
            restart_reason=restart or self.snapshot.restart_reason,
        )
        self.snapshot = snap
        self.metrics.tfserving_up.set(1)
        if changed:
            await self._apply(entries, applied, live, force=force)
            # Candidates that became AVAILABLE enter the file now, not at the next step.
            text = await self._write_known_good(entries, self.snapshot.live)
            self.snapshot = replace(self.snapshot, config_text=text, config_hash=config_hash(text))
        judged = await self.gate.examine(
            candidates, self.snapshot.live, serving=self._serving_versions(current), fingerprints=fingerprints
        )
        self._update_gauges()
        return changed or judged > 0

    def serving_version(self, model: str) -> int | None:
        """The version unversioned calls of ``model`` get now (None: none AVAILABLE in the config)."""
        entries = [e for e in self.applied or [] if e.name == model]
        return self._serving_versions(entries).get(model)

    def _serving_versions(self, current: Sequence[ModelEntry]) -> dict[str, int | None]:
        """The version an unversioned call of each model gets now (the newest AVAILABLE one)."""
        found: dict[str, int | None] = {}
        for entry in current:
            loaded = available_versions(states(self.snapshot.live.get(entry.name))) & set(entry.versions)
            found[entry.name] = max(loaded) if loaded else None
        return found

    async def _write_known_good(self, entries: list[ModelEntry], live: Statuses) -> str:
        """Write models.config with only the versions of ``entries`` AVAILABLE in ``live``; return its text."""
        available = {name: available_versions(states(statuses)) for name, statuses in live.items()}
        good = known_good([e for e in entries if candidate_of(e.name) is None], available)
        text = render_config(good)
        await asyncio.to_thread(self.config.write, text)
        self._file_entries = good
        return text

    def _fingerprints(self, names: set[str], on_disk: dict[str, frozenset[int]]) -> dict[str, dict[int, str | None]]:
        """Manifest fingerprint of every version on disk of ``names`` (reads manifests: run off the loop)."""
        return {m: {v: self.manifests.fingerprint(m, v) for v in on_disk.get(m, ())} for m in names}

    def _detect_restart(self, current: Sequence[ModelEntry], live: Statuses) -> str | None:
        reason: str | None = None
        for entry in current:
            reason = reason or self.tracker.restart_suspected(entry.name, live.get(entry.name))
        if reason:
            logger.warning("tfserving restart detected, re-applying models.config: %s", reason)
            self.metrics.restarts_detected.inc()
            self.tracker.forget_listings()
        for name, statuses in live.items():
            self.tracker.observe(name, statuses)
        return reason

    async def _apply(
        self, entries: list[ModelEntry], previous: Sequence[ModelEntry], live: Statuses, *, force: bool
    ) -> None:
        # TF Serving blocks a reload for names new *to its config*, not to GetModelStatus: a model
        # that was retired and comes back is still listed (END) but loads as a new one. After a restart
        # its config is the known-good file, which may lack models that only had candidates.
        server_config = self._server_config if self._server_config is not None else previous
        known = {entry.name for entry in server_config}
        adds = any(entry.name not in known for entry in entries)
        started = time.monotonic()
        try:
            result = await self.live.reload(entries, adds_models=adds)
        except TFServingUnreachable:
            raise
        except TFServingError as exc:
            self.metrics.reloads.labels("error").inc()
            self.snapshot = replace(self.snapshot, last_reload_result=f"error: {exc.detail}", last_reload_at=utcnow())
            raise
        self.metrics.reloads.labels(result).inc()
        self.applied = list(entries)
        self._reapply = False
        self._server_config = None
        self.tracker.configured(entries)
        changed = entries if force else [e for e in entries if e not in previous]
        latest = await self.live.wait_loaded(
            changed,
            self.tracker,
            wait=self.settings.load_wait_seconds,
            interval=self.settings.status_poll_interval_seconds,
            watch=[entry.name for entry in entries],
        )

        elapsed = time.monotonic() - started
        self.metrics.reload_seconds.observe(elapsed)
        self.snapshot = replace(
            self.snapshot,
            live={**self.snapshot.live, **latest},
            reloads=self.snapshot.reloads + 1,
            config_applied=True,
            last_reload_at=utcnow(),
            last_reload_seconds=round(elapsed, 3),
            last_reload_result=result,
        )
        logger.info(
            "models.config applied (%s) in %.2fs", result, elapsed, extra={"models": len(entries), "result": result}
        )

    def collect_garbage(self) -> None:
        """Remove what nobody serves, keeps or has loaded (see :mod:`services.config_manager.gc`).

        The volume is scanned *before* the documents are read: the puller writes its intent
        (desired.next.json) before it installs anything, so every version this scan sees is covered by
        the intent read after it. No age or grace period decides safety.
        """
        snap = self.snapshot
        on_disk = self.scan(self.root)
        reading = self.desired.read()  # fresh: a newer desired.json may keep more
        intent = self.desired_intent.read()
        if not snap.tfserving_reachable or reading.document is None or reading.error is not None:
            return
        if intent.error is not None and intent.mtime_ns is not None:
            return  # an intent that exists but cannot be read might keep anything: delete nothing
        served = {entry.name: frozenset(entry.versions) for entry in self.applied or []}
        intended = intent.document.models if intent.document is not None and intent.mtime_ns else {}
        targets = merge_targets(reading.document.models, intended)
        candidates = plan_gc(
            on_disk=on_disk,
            targets=targets,
            served=served,
            live={m: states(statuses) for m, statuses in snap.live.items()},
            settled={m: plan.settled for m, plan in snap.plans.items()},
        )
        report = self.gc.run(candidates)
        for removed in report.removed:
            self.metrics.gc_removed.labels("low_disk" if removed.low_disk_only else "unused").inc()
        after = self.scan(self.root) if report.removed else snap.on_disk
        self.snapshot = replace(self.snapshot, gc=report, free_bytes=report.free_bytes, on_disk=after)
        self.metrics.free_disk_bytes.set(report.free_bytes or 0)
        self.metrics.low_disk.set(1 if report.low_disk else 0)

    def _update_gauges(self) -> None:
        snap = self.snapshot
        entries = self.applied or []
        in_config = sum(len(e.versions) for e in entries)
        available = sum(len(available_versions(states(snap.live.get(e.name))) & set(e.versions)) for e in entries)
        self.metrics.versions_in_config.set(in_config)
        self.metrics.versions_available.set(available)
        self.metrics.failed_versions.set(sum(len(f) for f in snap.failed.values()))
        self.metrics.held_changes.set(sum(len(p.held) for p in snap.plans.values()))
        self.metrics.capacity_waiting.set(len(self.capacity))


def _valid_targets(models: dict[str, LocalModelTarget]) -> dict[str, LocalModelTarget]:
    """desired.json's models whose names are safe as directory names (others are logged and ignored)."""
    valid = {name: t for name, t in models.items() if is_valid_model_name(name)}
    for name in models.keys() - valid.keys():
        logger.error("desired.json names an invalid model %r; ignored", name, extra={"model": name})
    return valid
