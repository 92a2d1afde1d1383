"""Installing one version: disk check → staging → download and verify → rename into place → manifest.

:meth:`VersionInstaller.install` never lets one version stall the node. Whatever goes wrong with *this*
version — bytes that cannot be verified, a name the filesystem refuses, an object that is both a file and
a prefix, a permission error, a conflict in staging or at the target, any other OSError — fails this
version only: it is recorded in :class:`~.failures.FailedVersions` with the listing fingerprint
(retried only when its bytes change), reported in status and alarms, its staging removed, and the pass
goes on. Only bucket-wide errors (unreachable after retries, permission denied) propagate: they fail the
pass, which is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from services.common.completeness import BucketScan, VersionScan
from services.common.contracts import Manifest, ManifestObject
from services.common.contracts.golden import GoldenSet
from services.common.errors import BucketError, BucketNotFound, BucketPermissionDenied, FleetError, IntegrityError
from services.remote_model_puller.download import DownloadCancelled, Downloader, GenerationChanged, ObjectSpec, Progress
from services.remote_model_puller.failures import FailureKind, VersionFailure
from services.remote_model_puller.golden import add_generated_warmup
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.plan import remote_fingerprint
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.state import PullerState

logger = logging.getLogger(__name__)

DEFAULT_NAME_MAX = 255


class NotInstallable(Exception):
    """This version cannot be written to this node's disk as it is named (found before downloading)."""


def specs_of(vscan: VersionScan, prefix: str) -> list[ObjectSpec]:
    """The objects of a remote version, in name order, as the download engine takes them."""
    return [
        ObjectSpec(
            name=o.name, relative=vscan.relative_name(o, prefix), size=o.size, generation=o.generation, crc32c=o.crc32c
        )
        for o in sorted(vscan.objects, key=lambda o: o.name)
    ]


def disk_name_problem(specs: list[ObjectSpec], *, name_max: int) -> str | None:
    """Why these object names cannot all become files of one directory tree, or None.

    A bucket allows what a filesystem does not: a name part longer than NAME_MAX bytes, or ``a/b`` beside
    ``a/b/c`` (an object that is both a file and a prefix)."""
    files = {s.relative for s in specs}
    for spec in specs:
        parts = spec.relative.split("/")
        too_long = [p for p in parts if len(os.fsencode(p)) > name_max]
        if too_long:
            return (
                f"object {spec.name}: name part of {len(os.fsencode(too_long[0]))} bytes (filesystem limit {name_max})"
            )
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                return f"object {parent!r} is both a file and a prefix of {spec.relative!r}"
    return None


class VersionInstaller:
    """Installs versions for the sync pass; changes :class:`PullerState` (downloads, blocked, failures)."""

    def __init__(
        self,
        settings: Settings,
        *,
        downloader: Downloader,
        store: LocalStore,
        metrics: PullerMetrics,
        state: PullerState,
        cancel: threading.Event,
        restart_model: Callable[[str], None],
        golden_for: Callable[[str], GoldenSet | None] = lambda model: None,
    ) -> None:
        self.settings = settings
        self.downloader = downloader
        self.store = store
        self.metrics = metrics
        self.state = state
        self.cancel = cancel
        self.restart_model = restart_model
        self.golden_for = golden_for

    async def install(self, vscan: VersionScan, *, replace: bool) -> bool:
        """Fetch and install one version (``replace``: swap it for the installed copy); True if installed."""
        key = (vscan.model, vscan.version)
        specs = specs_of(vscan, self.settings.prefix)
        total = sum(s.size for s in specs)
        extra = {"model": vscan.model, "version": vscan.version, "bytes": total}
        staged: Path | None = None
        progress = Progress(bytes_total=total)
        generated: list[str] = []
        try:
            if not await asyncio.to_thread(self._fits, key, total):
                return False
            staged = await asyncio.to_thread(self._stage, vscan, specs)
            self.state.downloads[key] = progress
            self.metrics.downloads_in_flight.inc()
            logger.info("downloading version", extra=extra)
            try:
                await asyncio.to_thread(
                    self.downloader.download_version, specs, staged, progress=progress, cancel=self.cancel
                )
            finally:
                self.state.downloads.pop(key, None)
                self.metrics.downloads_in_flight.dec()
            if self.settings.generated_warmup_repeat > 0:
                # A version shipping no warm-up records gets them from the model's golden requests.
                written = await asyncio.to_thread(
                    add_generated_warmup,
                    staged,
                    self.golden_for(vscan.model),
                    repeat=self.settings.generated_warmup_repeat,
                )
                generated = [written] if written else []
            put = self.store.replace if replace else self.store.install
            await asyncio.to_thread(put, staged, vscan.model, vscan.version)
            staged = None
        except GenerationChanged as exc:
            logger.warning("object replaced during download; restarting version: %s", exc.detail, extra=extra)
            self.metrics.errors.labels(kind=exc.slug).inc()
            self.restart_model(vscan.model)
            return False
        except DownloadCancelled:
            return False
        except BucketError as exc:
            if exc.retryable or isinstance(exc, (BucketPermissionDenied, BucketNotFound)):
                raise  # the bucket, not this version: the pass fails and is retried with backoff
            # Bytes the bucket serves in a form that cannot be verified (gzip transcoding, wrong length).
            self._fail(vscan, "download-failed", exc.detail, slug=exc.slug)
            return False
        except IntegrityError as exc:
            self._fail(vscan, "download-failed", exc.detail, slug=exc.slug)
            return False
        except NotInstallable as exc:
            self._fail(vscan, "install-failed", str(exc), slug="install-error")
            return False
        except (OSError, FleetError) as exc:
            detail = exc.detail if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
            self._fail(vscan, "install-failed", detail, slug="install-error")
            return False
        except Exception as exc:  # a bug must not stall the node either: fail this version, keep the trace
            logger.exception("unexpected error installing a version", extra=extra)
            self._fail(vscan, "install-failed", f"unexpected {type(exc).__name__}: {exc}", slug="install-error")
            return False
        finally:
            if staged is not None:
                await asyncio.to_thread(self._discard, staged)
        await asyncio.to_thread(self._finish, vscan, specs, generated)
        self.metrics.downloaded_bytes.inc(total)
        self.metrics.versions_installed.inc()
        logger.info("installed version in %.1fs", time.time() - progress.started_at, extra=extra)
        return True

    def adopt_unmanifested(self, scan: BucketScan) -> None:
        """A version renamed into place whose manifest was not written (killed in between): check its
        files against the listing (sizes and crc32c) and write the manifest, once."""
        for model, versions in self.store.installed().items():
            for version in versions:
                remote = scan.models.get(model)
                vscan = remote.versions.get(version) if remote else None
                if vscan is None or not vscan.complete or self.store.read_manifest(model, version) is not None:
                    continue
                specs = specs_of(vscan, self.settings.prefix)
                if all(self.store.local_crc32c(model, version, s.relative) == s.crc32c for s in specs):
                    try:
                        self.store.write_manifest(self.manifest(vscan, specs))
                    except OSError as exc:
                        logger.error("could not write manifest: %s", exc, extra={"model": model, "version": version})
                        continue
                    logger.info("adopted installed version", extra={"model": model, "version": version})

    def manifest(self, vscan: VersionScan, specs: list[ObjectSpec], generated: list[str] | None = None) -> Manifest:
        return Manifest(
            model=vscan.model,
            version=vscan.version,
            source=f"gs://{self.settings.bucket_name}/{self.settings.prefix}{vscan.model}/{vscan.dir_name}/",
            objects=[
                ManifestObject(name=s.relative, size=s.size, crc32c=s.crc32c, generation=s.generation) for s in specs
            ],
            total_bytes=sum(s.size for s in specs),
            generated=generated or [],
        )

    def _fits(self, key: tuple[str, int], total: int) -> bool:
        free = self.store.free_bytes()
        margin = self.settings.disk_margin_bytes
        if free < total + margin:
            self.state.blocked[key] = f"needs {total} bytes + {margin} margin, {free} free: not started"
            self.metrics.errors.labels(kind="disk-full").inc()
            return False
        self.state.blocked.pop(key, None)
        return True

    def _stage(self, vscan: VersionScan, specs: list[ObjectSpec]) -> Path:
        """A new staging directory, after checking the names fit this filesystem (before any byte moves)."""
        try:
            name_max = os.pathconf(self.store.staging, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = DEFAULT_NAME_MAX
        problem = disk_name_problem(specs, name_max=name_max)
        if problem:
            raise NotInstallable(problem)
        return self.store.new_staging(vscan.model, vscan.version)

    def _finish(self, vscan: VersionScan, specs: list[ObjectSpec], generated: list[str]) -> None:
        key = (vscan.model, vscan.version)
        try:
            self.store.write_manifest(self.manifest(vscan, specs, generated))
        except OSError as exc:  # installed and durable; the next pass adopts it (checks crc32c, writes it)
            logger.error("version installed, manifest not written: %s", exc, extra={"model": key[0], "version": key[1]})
        self.state.startup_problems.pop(key, None)
        self.state.failures.clear(key)

    def _fail(self, vscan: VersionScan, kind: FailureKind, reason: str, *, slug: str) -> None:
        """Record the failure against these bytes: not fetched again until the listing shows new ones."""
        logger.error(
            "version not installed (%s): %s", kind, reason, extra={"model": vscan.model, "version": vscan.version}
        )
        self.metrics.errors.labels(kind=slug).inc()
        fingerprint = remote_fingerprint(vscan, self.settings.prefix)
        self.state.failures.record((vscan.model, vscan.version), VersionFailure(fingerprint, reason, kind))

    def _discard(self, staged: Path) -> None:
        try:
            self.store.discard_staging(staged)
        except OSError as exc:  # cleared at the next start; never worth failing the pass for
            logger.warning("could not remove staging %s: %s", staged, exc)
