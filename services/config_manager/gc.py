"""Disk GC: remove versions nobody serves, keeps or has loaded — and never anything serving.

Rules (DESIGN.md): a version goes only if it is neither served (in models.config), nor kept
(desired.json ``keep``), nor loaded (tfserving lists it in any state but END), and only once its
model is settled (every version of the config AVAILABLE: the replacement serves). In low-disk mode
kept-but-not-served versions go too, oldest first, until the free space is back above the threshold.
A removal renames the version into ``LOCAL/.fleet/trash/`` first (atomic, invisible to tfserving and
the puller), then deletes it, and its manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.atomic import fsync_dir
from services.common.contracts import LocalModelTarget
from services.common.contracts.local import manifest_path
from services.common.tfs import VersionState
from services.config_manager.localdisk import trash_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcCandidate:
    model: str
    version: int
    reason: str
    low_disk_only: bool = False


@dataclass
class GcReport:
    """What one GC run did and what it could not do."""

    removed: list[GcCandidate] = field(default_factory=list)
    low_disk: bool = False
    free_bytes: int | None = None
    problems: list[str] = field(default_factory=list)


def _loaded(live: Mapping[int, VersionState] | None, version: int) -> bool:
    state = (live or {}).get(version)
    return state is not None and state != VersionState.END


def merge_targets(
    desired: Mapping[str, LocalModelTarget], intent: Mapping[str, LocalModelTarget]
) -> dict[str, LocalModelTarget]:
    """desired.json's targets widened by the puller's intent: a version either serves or keeps is kept.

    A model is retired only if every document that names it retires it.
    """
    merged = dict(desired)
    for name, wanted in intent.items():
        now = merged.get(name)
        if now is None:
            merged[name] = wanted
            continue
        merged[name] = LocalModelTarget(
            serve=sorted(set(now.serve) | set(wanted.serve)),
            keep=sorted(set(now.keep) | set(wanted.keep)),
            labels=now.labels,
            enabled=now.enabled or wanted.enabled,
        )
    return merged


def plan_gc(
    *,
    on_disk: Mapping[str, frozenset[int]],
    targets: Mapping[str, LocalModelTarget] | None,
    served: Mapping[str, frozenset[int]],
    live: Mapping[str, Mapping[int, VersionState] | None],
    settled: Mapping[str, bool],
) -> list[GcCandidate]:
    """Removable versions, the always-removable ones first, then low-disk ones (oldest first).

    ``targets`` None (no desired.json yet) removes nothing. A model absent from desired.json keeps
    everything; a retired model (``enabled: false``) loses what is neither served nor loaded.
    """
    if targets is None:
        return []
    always: list[GcCandidate] = []
    low_disk: list[GcCandidate] = []
    for model in sorted(on_disk):
        target = targets.get(model)
        if target is None:
            continue
        in_config = served.get(model, frozenset())
        model_live = live.get(model)
        for version in sorted(on_disk[model]):
            if version in in_config or _loaded(model_live, version):
                continue
            if not target.enabled:
                always.append(GcCandidate(model, version, "model retired (enabled: false)"))
            elif not settled.get(model, False):
                continue  # the replacement is not AVAILABLE yet
            elif version not in target.keep:
                always.append(GcCandidate(model, version, "neither served nor kept"))
            elif version not in target.serve:
                low_disk.append(GcCandidate(model, version, "low disk: kept but not served", low_disk_only=True))
    low_disk.sort(key=lambda c: (c.version, c.model))
    return always + low_disk


class GarbageCollector:
    """Carries out :func:`plan_gc`'s candidates on the model volume."""

    def __init__(self, local_root: Path, *, low_disk_free_bytes: int, free_bytes: Callable[[Path], int]) -> None:
        self.local_root = local_root
        self.low_disk_free_bytes = low_disk_free_bytes
        self.free_bytes = free_bytes
        self.last_report = GcReport()

    def is_low(self) -> tuple[bool, int]:
        free = self.free_bytes(self.local_root)
        return free < self.low_disk_free_bytes, free

    def run(self, candidates: list[GcCandidate]) -> GcReport:
        """Remove the always-removable candidates; low-disk ones only while free space is short."""
        report = GcReport()
        self.empty_trash()
        for candidate in candidates:
            if candidate.low_disk_only:
                low, _ = self.is_low()
                if not low:
                    break
            try:
                self.remove_version(candidate.model, candidate.version)
            except OSError as exc:
                report.problems.append(f"could not remove {candidate.model}/{candidate.version}: {exc}")
                logger.warning(
                    "gc failed to remove a version: %s",
                    exc,
                    extra={"model": candidate.model, "version": candidate.version},
                )
                continue
            report.removed.append(candidate)
            logger.info(
                "gc removed %s/%s: %s",
                candidate.model,
                candidate.version,
                candidate.reason,
                extra={"model": candidate.model, "version": candidate.version},
            )
        report.low_disk, report.free_bytes = self.is_low()
        if report.low_disk:
            report.problems.append(
                f"low disk: {report.free_bytes} bytes free < {self.low_disk_free_bytes} after GC; "
                "nothing serving is removed"
            )
        self.last_report = report
        return report

    def remove_version(self, model: str, version: int) -> None:
        """Rename ``LOCAL/<model>/<version>`` into the trash, then delete it and its manifest."""
        source = self.local_root / model / str(version)
        trash = trash_dir(self.local_root)
        trash.mkdir(parents=True, exist_ok=True)
        parked = trash / f"{model}-{version}-{secrets.token_hex(4)}"
        os.rename(source, parked)
        fsync_dir(source.parent)
        shutil.rmtree(parked, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            manifest_path(self.local_root, model, version).unlink()

    def empty_trash(self) -> None:
        """Delete what a killed run left in the trash."""
        trash = trash_dir(self.local_root)
        if trash.is_dir():
            for entry in trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
