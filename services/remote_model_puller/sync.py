"""The sync loop: list the bucket → desired state → plan → download → manifests and desired.json.

One pass (:meth:`SyncWorker.run_once`):

1. List the models prefix once (pages of 1,000 objects). The listing also carries the generation of
   ``_fleet/state.json``: the document is read only when that generation changed, so a pass over an
   unchanged bucket makes list calls and no object read at all.
2. Apply the completeness rule, resolve every model's policy, plan (:mod:`.plan`).
3. Download what is missing into staging, verify, fsync, rename into place, write the manifest.
4. Write ``desired.json`` when its content changed.

Bad input (invalid state document, unsafe names, bucket errors) never touches what is installed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.cloud import storage

from services.common.completeness import BucketScan, RemoteObject, VersionScan, scan_listing
from services.common.contracts import Alarm, DesiredStateDocument, LocalDesired, Manifest, ManifestObject
from services.common.contracts.base import utcnow
from services.common.errors import BucketError, BucketPermissionDenied, IntegrityError
from services.common.gcs import ListingStats, list_objects
from services.common.worker import PeriodicWorker
from services.remote_model_puller import baddownloads
from services.remote_model_puller.document import DocumentSource
from services.remote_model_puller.download import (
    DownloadCancelled,
    Downloader,
    GenerationChanged,
    ObjectSpec,
    Progress,
)
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.plan import LocalVersion, Plan, PlanInputs, make_plan, remote_fingerprint
from services.remote_model_puller.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class PullerState:
    """What the status endpoint shows; updated by the sync worker only."""

    plan: Plan | None = None
    scan: BucketScan | None = None
    installed: dict[str, dict[int, str]] = field(default_factory=dict)
    downloads: dict[tuple[str, int], Progress] = field(default_factory=dict)
    bad_downloads: dict[tuple[str, int], str] = field(default_factory=dict)
    bad_reasons: dict[tuple[str, int], str] = field(default_factory=dict)
    blocked: dict[tuple[str, int], str] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    document_generation: int | None = None
    document_error: str | None = None
    listing_pages: int = 0
    listing_objects: int = 0
    listing_seconds: float = 0.0
    passes_completed: int = 0
    startup_problems: dict[tuple[str, int], str] = field(default_factory=dict)


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
        self.state = PullerState()
        self.cancel = threading.Event()
        self.documents = DocumentSource(
            client=client,
            bucket=settings.bucket_name,
            prefix=settings.prefix,
            timeout=settings.gcs_timeout_seconds,
            state_dir=settings.state_dir,
        )
        self._started = False
        self._bad_path = baddownloads.path_for(settings.local_model_directory)
        self._load_bad_downloads()

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
            self.metrics.errors.labels(kind=exc.slug).inc()
            self._set_alarms([Alarm(kind="bucket-unreachable", message=exc.detail, since=utcnow())])
            raise
        finally:
            self.metrics.sync_seconds.observe(time.monotonic() - started)
        self.state.passes_completed += 1
        self.metrics.last_success.set(time.time())

    async def _pass(self, targets: frozenset[str] | None) -> None:
        if not self._started:
            await asyncio.to_thread(self._startup)
            self._started = True
        objects, stats, seconds = await asyncio.to_thread(self._list)
        self.state.listing_pages, self.state.listing_objects, self.state.listing_seconds = (
            stats.pages,
            stats.objects,
            seconds,
        )
        self.metrics.list_pages.inc(stats.pages)
        reads = self.documents.reads
        document = await self.documents.current(objects)
        self.metrics.object_reads.inc(self.documents.reads - reads)
        self.state.document_generation, self.state.document_error = self.documents.generation, self.documents.error
        if self.documents.error and self.documents.reads > reads:
            self.metrics.errors.labels(kind=self.documents.alarm_kind).inc()
        prefix = self.settings.prefix
        now = datetime.now(UTC)
        scan = scan_listing(
            objects,
            prefix=prefix,
            now=now,
            quiet_period=timedelta(seconds=self.settings.quiet_period_seconds),
            marker=self.settings.complete_marker,
        )
        self.state.scan = scan
        alarms: list[Alarm] = []
        if document is None:
            alarms.append(self.documents.alarm())
            self._set_alarms(alarms)
            return  # no valid desired state ever seen: change nothing
        if self.state.document_error:
            alarms.append(self.documents.alarm())
        plan = await self._plan(scan, document)
        alarms += plan.alarms
        self.state.plan = plan
        self._set_alarms(alarms)
        work = self._work(plan, targets)
        wanted = {(m, v) for m, v, _ in work}
        self.state.blocked = {k: why for k, why in self.state.blocked.items() if k in wanted}
        desired = plan.desired(generation=self.state.document_generation, hostname=self.settings.hostname)
        if work:
            # GC on config_manager keeps what this intent serves or keeps: nothing installed below can
            # look unused, however long the pass takes.
            await asyncio.to_thread(self.store.write_desired_intent, desired)
        for model, version, replace in work:
            await self._fetch(scan.models[model].versions[version], replace=replace)
            if version in plan.models[model].target.serve:
                # A served version installed: let config_manager roll it in now, not at the end of the pass.
                await asyncio.to_thread(self._write_desired, desired)
        if any(key in self.state.bad_downloads for key in wanted):
            # Bytes that failed verification are not "complete": re-resolve (e.g. keep serving the previous).
            plan = await self._plan(scan, document)
            alarms = [a for a in alarms if a.kind != "mass-removal"] + plan.alarms
            self.state.plan = plan
        self._set_alarms(alarms + self._download_alarms())
        desired = plan.desired(generation=self.state.document_generation, hostname=self.settings.hostname)
        await asyncio.to_thread(self._write_desired, desired)
        self.state.installed = await asyncio.to_thread(self.store.installed)

    def _startup(self) -> None:
        removed = self.store.prepare()
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

    def _list(self) -> tuple[list[RemoteObject], ListingStats, float]:
        stats = ListingStats()
        started = time.monotonic()
        objects = list(
            list_objects(
                self.client,
                self.settings.bucket_name,
                self.settings.prefix,
                timeout=self.settings.gcs_timeout_seconds,
                stats=stats,
            )
        )
        return objects, stats, time.monotonic() - started

    async def _plan(self, scan: BucketScan, document: DesiredStateDocument) -> Plan:
        def gather() -> PlanInputs:
            installed: dict[str, dict[int, LocalVersion]] = {}
            for model, versions in self.store.installed().items():
                for version in versions:
                    installed.setdefault(model, {})[version] = LocalVersion(
                        manifest=self.store.read_manifest(model, version),
                        broken=self.state.startup_problems.get((model, version)),
                    )
            self.state.installed = {m: dict(v) for m, v in self.store.installed().items()}
            return PlanInputs(
                scan=scan,
                prefix=self.settings.prefix,
                document=document,
                hostname=self.settings.hostname,
                previous=self.store.read_desired(),
                installed=installed,
                failed=self.store.read_failed(),
                bad_downloads=dict(self.state.bad_downloads),
                guard=self.settings.mass_removal_guard,
            )

        await asyncio.to_thread(self._adopt_unmanifested, scan)
        return make_plan(await asyncio.to_thread(gather))

    def _adopt_unmanifested(self, scan: BucketScan) -> None:
        """A version renamed into place whose manifest was not written (killed in between): check its
        files against the listing (sizes and crc32c) and write the manifest, once."""
        for model, versions in self.store.installed().items():
            for version in versions:
                remote = scan.models.get(model)
                vscan = remote.versions.get(version) if remote else None
                if vscan is None or not vscan.complete or self.store.read_manifest(model, version) is not None:
                    continue
                specs = _specs(vscan, self.settings.prefix)
                if all(self.store.local_crc32c(model, version, s.relative) == s.crc32c for s in specs):
                    self.store.write_manifest(self._manifest(vscan, specs))
                    logger.info("adopted installed version", extra={"model": model, "version": version})

    def _work(self, plan: Plan, targets: frozenset[str] | None) -> list[tuple[str, int, bool]]:
        work: list[tuple[str, int, bool]] = []
        for name, model_plan in plan.models.items():
            if targets is not None and name not in targets:
                continue
            work += [(name, v, True) for v in model_plan.replace]
            work += [(name, v, False) for v in model_plan.fetch]
        served = {(n, v) for n, p in plan.models.items() for v in p.target.serve}
        return sorted(work, key=lambda w: (w[0:2] not in served, w[0], -w[1]))

    async def _fetch(self, vscan: VersionScan, *, replace: bool) -> None:
        key = (vscan.model, vscan.version)
        specs = _specs(vscan, self.settings.prefix)
        total = sum(s.size for s in specs)
        free = await asyncio.to_thread(self.store.free_bytes)
        if free < total + self.settings.disk_margin_bytes:
            self.state.blocked[key] = (
                f"needs {total} bytes + {self.settings.disk_margin_bytes} margin, {free} free: not started"
            )
            self.metrics.errors.labels(kind="disk-full").inc()
            return
        self.state.blocked.pop(key, None)
        staged = await asyncio.to_thread(self.store.new_staging, vscan.model, vscan.version)
        progress = Progress(bytes_total=total)
        self.state.downloads[key] = progress
        self.metrics.downloads_in_flight.inc()
        extra = {"model": vscan.model, "version": vscan.version, "bytes": total}
        logger.info("downloading version", extra=extra)
        try:
            await asyncio.to_thread(
                self.downloader.download_version, specs, staged, progress=progress, cancel=self.cancel
            )
            install = self.store.replace if replace else self.store.install
            await asyncio.to_thread(install, staged, vscan.model, vscan.version)
        except GenerationChanged as exc:
            logger.warning("object replaced during download; restarting version: %s", exc.detail, extra=extra)
            self.metrics.errors.labels(kind=exc.slug).inc()
            self.trigger(vscan.model)
            return
        except (IntegrityError, BucketError) as exc:
            if isinstance(exc, BucketError) and (exc.retryable or isinstance(exc, BucketPermissionDenied)):
                raise  # the bucket, not this version: the pass fails and is retried with backoff
            # Bytes that fail verification, or that the bucket serves in a form that cannot be verified
            # (gzip transcoding, wrong length): this version, at these generations, is not installable.
            logger.error("version not installable, not installed: %s", exc.detail, extra=extra)
            self.metrics.errors.labels(kind=exc.slug).inc()
            self.state.bad_downloads[key] = remote_fingerprint(vscan, self.settings.prefix)
            self.state.bad_reasons[key] = exc.detail
            self._save_bad_downloads()
            return
        except DownloadCancelled:
            return
        finally:
            self.state.downloads.pop(key, None)
            self.metrics.downloads_in_flight.dec()
            if staged.exists():
                await asyncio.to_thread(self.store.discard_staging, staged)
        await asyncio.to_thread(self.store.write_manifest, self._manifest(vscan, specs))
        self.state.startup_problems.pop(key, None)
        self.state.bad_reasons.pop(key, None)
        if self.state.bad_downloads.pop(key, None) is not None:
            self._save_bad_downloads()
        self.metrics.downloaded_bytes.inc(total)
        self.metrics.versions_installed.inc()
        logger.info("installed version in %.1fs", time.time() - progress.started_at, extra=extra)

    def _load_bad_downloads(self) -> None:
        for key, (fingerprint, reason) in baddownloads.load(self._bad_path).items():
            self.state.bad_downloads[key] = fingerprint
            self.state.bad_reasons[key] = reason

    def _save_bad_downloads(self) -> None:
        baddownloads.save(self._bad_path, self.state.bad_downloads, self.state.bad_reasons)

    def _manifest(self, vscan: VersionScan, specs: list[ObjectSpec]) -> Manifest:
        return Manifest(
            model=vscan.model,
            version=vscan.version,
            source=f"gs://{self.settings.bucket_name}/{self.settings.prefix}{vscan.model}/{vscan.dir_name}/",
            objects=[
                ManifestObject(name=s.relative, size=s.size, crc32c=s.crc32c, generation=s.generation) for s in specs
            ],
            total_bytes=sum(s.size for s in specs),
        )

    def _download_alarms(self) -> list[Alarm]:
        alarms = [
            Alarm(kind="disk-full", model=m, message=f"version {v}: {why}", since=utcnow(), severity="critical")
            for (m, v), why in sorted(self.state.blocked.items())
        ]
        alarms += [
            Alarm(kind="download-failed", model=m, message=f"version {v}: {why}", since=utcnow())
            for (m, v), why in sorted(self.state.bad_reasons.items())
        ]
        return alarms

    def _set_alarms(self, alarms: list[Alarm]) -> None:
        self.state.alarms = alarms
        self.metrics.set_alarms(alarms)

    def _write_desired(self, desired: LocalDesired) -> None:
        previous = self.store.read_desired()
        if previous is not None and (previous.models, previous.generation) == (desired.models, desired.generation):
            return
        self.store.write_desired(desired)
        logger.info("desired.json updated", extra={"models": len(desired.models), "generation": desired.generation})


def _specs(vscan: VersionScan, prefix: str) -> list[ObjectSpec]:
    return [
        ObjectSpec(
            name=o.name, relative=vscan.relative_name(o, prefix), size=o.size, generation=o.generation, crc32c=o.crc32c
        )
        for o in sorted(vscan.objects, key=lambda o: o.name)
    ]
