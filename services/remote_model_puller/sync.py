"""The sync loop: list the bucket → desired state → plan → download → manifests and desired.json.

One pass (:meth:`SyncWorker.run_once`):

1. List the models prefix once (pages of 1,000 objects), or, for a pass an event targeted, only that
   model's prefix (or the state document and golden requests), merged into the last listing
   (:mod:`.listing`). The listing also carries the generation of ``_fleet/state.json``: the document is
   read only when that generation changed, so a pass over an unchanged bucket reads no object at all.
2. Apply the completeness rule, resolve every model's policy, plan (:mod:`.plan`).
3. Install what is missing, one version at a time (:mod:`.install`: staging, verify, fsync, rename,
   manifest). A version that cannot be installed fails alone (recorded in :mod:`.failures`); the pass
   goes on.
4. Write ``desired.json`` when its content changed — always, even when an install or the bucket failed
   mid-pass, so pins, rollbacks and retirements keep reaching the node.

Bad input (invalid state document, unsafe names, bucket errors) never touches what is installed. The
mutable state lives in one :class:`~.state.PullerState`, which status reads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from google.cloud import storage

from services.common.completeness import BucketScan, scan_listing
from services.common.contracts import Alarm, DesiredStateDocument, LocalDesired
from services.common.contracts.base import utcnow
from services.common.errors import BucketError
from services.common.worker import PeriodicWorker
from services.remote_model_puller.document import DocumentSource
from services.remote_model_puller.download import Downloader
from services.remote_model_puller.golden import GoldenMirror
from services.remote_model_puller.install import VersionInstaller
from services.remote_model_puller.listing import FLEET_TARGET, ListingCache
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.plan import LocalVersion, Plan, PlanInputs, make_plan
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.state import PullerState

logger = logging.getLogger(__name__)

Work = tuple[str, int, bool]  # (model, version, replace)


class SyncWorker(PeriodicWorker):
    """Keeps LOCAL holding the versions the desired state asks for."""

    name = "sync"

    def __init__(
        self,
        settings: Settings,
        *,
        client: storage.Client,
        downloader: Downloader,
        store: LocalStore,
        metrics: PullerMetrics,
    ) -> None:
        # Failed passes back off 1, 2, 4 ... s, capped at max(interval, 5 s) and never above 60 s.
        backoff = min(60.0, max(settings.sync_interval_seconds, 5.0))
        super().__init__(interval=settings.sync_interval_seconds, jitter=0.1, max_backoff=backoff)
        self.settings = settings
        self.client = client
        self.downloader = downloader
        self.store = store
        self.metrics = metrics
        self.state = PullerState.for_volume(settings.local_model_directory)
        self.cancel = threading.Event()
        self.installer = VersionInstaller(
            settings,
            downloader=downloader,
            store=store,
            metrics=metrics,
            state=self.state,
            cancel=self.cancel,
            restart_model=self.trigger,
            golden_for=lambda model: self.golden.sets.get(model),
        )
        self.golden = GoldenMirror(
            client=client,
            bucket=settings.bucket_name,
            prefix=settings.prefix,
            timeout=settings.gcs_timeout_seconds,
            root=settings.local_model_directory,
        )
        self.documents = DocumentSource(
            client=client,
            bucket=settings.bucket_name,
            prefix=settings.prefix,
            timeout=settings.gcs_timeout_seconds,
            state_dir=settings.state_dir,
        )
        self.listing = ListingCache(
            bucket=settings.bucket_name, prefix=settings.prefix, timeout=settings.gcs_timeout_seconds
        )
        #: Called after each successful pass (the event coalescer acks what the pass covered).
        self.on_synced: Callable[[], None] | None = None
        self._started = False

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop; downloads in flight are abandoned (their staging is cleared at next start)."""
        self.cancel.set()
        await super().stop(grace)

    def progress_at(self) -> float | None:
        """The pass's start or last step, or the last bytes any download of it received."""
        moved = [p.moved_at for p in self.state.downloads.values()]
        base = super().progress_at()
        return max([*moved, base]) if base is not None else None

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        started = time.monotonic()
        try:
            await self._pass(targets)
        except BucketError as exc:
            self.listing.forget()  # a failed pass covers nothing: the next one lists everything
            self.metrics.errors.labels(kind=exc.slug).inc()
            alarm = Alarm(kind="bucket-unreachable", message=exc.detail, since=utcnow())
            self.state.set_alarms([alarm, *self.state.version_alarms()], self.metrics)
            raise
        except BaseException:
            self.listing.forget()
            raise
        finally:
            self.metrics.sync_seconds.observe(time.monotonic() - started)
        self.state.passes_completed += 1
        self.metrics.last_success.set(time.time())
        if self.on_synced is not None:
            self.on_synced()

    async def _pass(self, targets: frozenset[str] | None) -> None:
        if not self._started:
            await asyncio.to_thread(self._startup)
            self._started = True
        scan, document = await self._read_bucket(targets)
        await asyncio.to_thread(self.state.failures.reload_if_changed)
        alarms: list[Alarm] = [self.documents.alarm()] if self.state.document_error or document is None else []
        alarms += self.golden.alarms()
        if document is None:
            self.state.set_alarms(alarms, self.metrics)
            return  # no valid desired state ever seen: change nothing
        plan = await self._plan(scan, document)
        self.state.set_alarms(alarms + plan.alarms + self.state.version_alarms(), self.metrics)
        work = self._work(plan, targets)
        wanted = {(m, v) for m, v, _ in work}
        self.state.blocked = {k: why for k, why in self.state.blocked.items() if k in wanted}
        failed_before = self.state.failures.fingerprints()
        try:
            await self._install(work, scan, plan)
        finally:
            # Whatever happened to the installs (or the bucket) on the way, desired.json follows the
            # plan: pins, rollbacks and retirements reach the node while a version cannot install.
            if self.state.failures.fingerprints() != failed_before:
                plan = await self._plan(scan, document)  # failed bytes are not complete: re-resolve
            self.state.set_alarms(alarms + plan.alarms + self.state.version_alarms(), self.metrics)
            await asyncio.to_thread(self._write_desired, self._desired(plan))
            self.state.installed = await asyncio.to_thread(self.store.installed)

    async def _install(self, work: list[Work], scan: BucketScan, plan: Plan) -> None:
        if not work:
            return
        desired = self._desired(plan)
        # GC on config_manager keeps what this intent serves or keeps: nothing installed below can look
        # unused, however long the pass takes.
        await asyncio.to_thread(self.store.write_desired_intent, desired)
        for model, version, replace in work:
            installed = await self.installer.install(scan.models[model].versions[version], replace=replace)
            if installed and version in plan.models[model].target.serve:
                # A served version installed: let config_manager roll it in now, not at the end of the pass.
                await asyncio.to_thread(self._write_desired, desired)

    async def _read_bucket(self, targets: frozenset[str] | None) -> tuple[BucketScan, DesiredStateDocument | None]:
        """One listing, the desired-state document (read only when its generation changed), the scan."""
        listing = await asyncio.to_thread(self.listing.refresh, self.client, targets)
        objects, stats = listing.objects, listing.stats
        self.state.listing_pages, self.state.listing_objects, self.state.listing_seconds = (
            stats.pages,
            stats.objects,
            listing.seconds,
        )
        self.metrics.list_pages.inc(stats.pages)
        self.metrics.listings.labels(scope="full" if listing.full else "targeted").inc()
        golden_reads = self.golden.reads
        await self.golden.refresh(objects)  # golden sets: config_manager's check, the generated warm-up
        self.metrics.object_reads.inc(self.golden.reads - golden_reads)
        reads = self.documents.reads
        document = await self.documents.current(objects)
        self.metrics.object_reads.inc(self.documents.reads - reads)
        self.state.document_generation, self.state.document_error = self.documents.generation, self.documents.error
        if self.documents.error and self.documents.reads > reads:
            self.metrics.errors.labels(kind=self.documents.alarm_kind).inc()
        self.state.scanned_at = datetime.now(UTC)
        self.state.scan = scan_listing(
            objects,
            prefix=self.settings.prefix,
            now=self.state.scanned_at,
            quiet_period=timedelta(seconds=self.settings.quiet_period_seconds),
            marker=self.settings.complete_marker,
        )
        return self.state.scan, document

    def _startup(self) -> None:
        removed = self.store.prepare()
        self.golden.load_local()
        if removed:
            logger.info("cleared debris of an interrupted run: %s", ", ".join(removed[:10]))
        for model, versions in self.store.installed().items():
            for version in versions:
                manifest = self.store.read_manifest(model, version)
                problem = self.store.verify_sizes(manifest) if manifest is not None else None
                if problem:
                    logger.warning("installed version fails its manifest: %s", problem, extra={"model": model})
                    self.state.startup_problems[(model, version)] = problem
        self.documents.load_last_good()

    async def _plan(self, scan: BucketScan, document: DesiredStateDocument) -> Plan:
        def gather() -> PlanInputs:
            installed: dict[str, dict[int, LocalVersion]] = {}
            on_disk = self.store.installed()
            for model, versions in on_disk.items():
                for version in versions:
                    installed.setdefault(model, {})[version] = LocalVersion(
                        manifest=self.store.read_manifest(model, version),
                        broken=self.state.startup_problems.get((model, version)),
                    )
            self.state.installed = on_disk
            return PlanInputs(
                scan=scan,
                prefix=self.settings.prefix,
                document=document,
                hostname=self.settings.hostname,
                previous=self.store.read_desired(),
                installed=installed,
                failed=self.store.read_failed(),
                failed_versions=self.state.failures.fingerprints(),
                guard=self.settings.mass_removal_guard,
            )

        await asyncio.to_thread(self.installer.adopt_unmanifested, scan)
        self.state.plan = make_plan(await asyncio.to_thread(gather))
        return self.state.plan

    def _work(self, plan: Plan, targets: frozenset[str] | None) -> list[Work]:
        work: list[Work] = []
        for name, model_plan in plan.models.items():
            if targets is not None and FLEET_TARGET not in targets and name not in targets:
                continue
            work += [(name, v, True) for v in model_plan.replace]
            work += [(name, v, False) for v in model_plan.fetch]
        served = {(n, v) for n, p in plan.models.items() for v in p.target.serve}
        return sorted(work, key=lambda w: (w[0:2] not in served, w[0], -w[1]))

    def _desired(self, plan: Plan) -> LocalDesired:
        return plan.desired(generation=self.state.document_generation, hostname=self.settings.hostname)

    def _write_desired(self, desired: LocalDesired) -> None:
        previous = self.store.read_desired()
        if previous is not None and (previous.models, previous.generation) == (desired.models, desired.generation):
            return
        self.store.write_desired(desired)
        logger.info("desired.json updated", extra={"models": len(desired.models), "generation": desired.generation})
