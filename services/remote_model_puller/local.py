"""The node's model volume as the puller sees it: installed versions, manifests, staging, trash.

A version directory ``LOCAL/<model>/<version>`` only ever appears by one ``rename`` of a fully written,
verified and fsynced staging directory (``LOCAL/.fleet/staging/…``, same filesystem, invisible to TF
Serving). Nothing writes inside an installed version. The only removal the puller does is replacing a
version whose bytes are known bad: the old directory is renamed into ``LOCAL/.fleet/trash/`` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import google_crc32c
from pydantic import ValidationError

from services.common.atomic import atomic_write_json, exchange_paths, fsync_dir, remove_stale_temps
from services.common.completeness import canonical_version_name, parse_version
from services.common.contracts import FailedDocument, LocalDesired, Manifest
from services.common.contracts.base import is_valid_model_name
from services.common.contracts.local import desired_intent_path, desired_path, failed_path, fleet_dir, manifest_path
from services.common.errors import Conflict
from services.remote_model_puller.crc import to_gcs_base64

logger = logging.getLogger(__name__)

TRASH_PREFIX = "puller-"
HASH_CHUNK = 4 << 20


class LocalStore:
    """Paths and filesystem operations under one ``LOCAL_MODEL_DIRECTORY``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fleet = fleet_dir(root)
        self.staging = self.fleet / "staging"
        self.trash = self.fleet / "trash"

    def prepare(self) -> list[str]:
        """Create ``.fleet`` dirs and clear debris a killed puller left; returns what was removed."""
        removed: list[str] = []
        for directory in (self.fleet, self.staging, self.trash):
            directory.mkdir(parents=True, exist_ok=True)
        for entry in self.staging.iterdir():
            _remove_tree(entry)
            removed.append(f"staging/{entry.name}")
        for entry in self.trash.iterdir():
            if entry.name.startswith(TRASH_PREFIX):  # config_manager owns the rest of the trash
                _remove_tree(entry)
                removed.append(f"trash/{entry.name}")
        removed += [str(p) for p in remove_stale_temps(self.fleet)]
        manifests = self.fleet / "manifests"
        if manifests.is_dir():
            for model_dir in manifests.iterdir():
                removed += [str(p) for p in remove_stale_temps(model_dir)]
        if removed:
            fsync_dir(self.staging)
        return removed

    def writable(self) -> bool:
        """True if a file can be created in ``LOCAL/.fleet`` right now."""
        probe = self.fleet / f".probe-{os.getpid()}-{secrets.token_hex(4)}.tmp-"
        try:
            self.fleet.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            return False
        return True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def installed(self) -> dict[str, dict[int, str]]:
        """Version directories on disk: model → version → directory name (canonical or not)."""
        found: dict[str, dict[int, str]] = {}
        if not self.root.is_dir():
            return found
        for model_dir in self.root.iterdir():
            if not model_dir.is_dir() or not is_valid_model_name(model_dir.name):
                continue
            for version_dir in model_dir.iterdir():
                version = parse_version(version_dir.name)
                if version is not None and version_dir.is_dir():
                    found.setdefault(model_dir.name, {})[version] = version_dir.name
        return found

    def version_dir(self, model: str, version: int) -> Path:
        return self.root / model / canonical_version_name(version)

    def read_manifest(self, model: str, version: int) -> Manifest | None:
        """The manifest of an installed version (None when absent or unreadable)."""
        try:
            return Manifest.read(manifest_path(self.root, model, version))
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(manifest_path(self.root, manifest.model, manifest.version), manifest)

    def read_failed(self) -> FailedDocument:
        """config_manager's failed.json (empty when absent or unreadable)."""
        try:
            return FailedDocument.read(failed_path(self.root))
        except (FileNotFoundError, ValidationError, ValueError):
            return FailedDocument()

    def read_desired(self) -> LocalDesired | None:
        try:
            return LocalDesired.read(desired_path(self.root))
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def write_desired(self, desired: LocalDesired) -> None:
        atomic_write_json(desired_path(self.root), desired)

    def write_desired_intent(self, desired: LocalDesired) -> None:
        """Announce the desired.json this pass works toward, before anything is installed for it."""
        atomic_write_json(desired_intent_path(self.root), desired)

    def verify_sizes(self, manifest: Manifest) -> str | None:
        """Cheap start-up check of an installed version against its manifest: every file, right size."""
        base = self.version_dir(manifest.model, manifest.version)
        for obj in manifest.objects:
            try:
                size = (base / obj.name).stat().st_size
            except FileNotFoundError:
                return f"{obj.name} missing"
            if size != obj.size:
                return f"{obj.name} has {size} bytes, manifest says {obj.size}"
        return None

    def local_crc32c(self, model: str, version: int, relative: str) -> str | None:
        """CRC32C of an installed file (used only to adopt a version that has no manifest)."""
        crc = 0
        try:
            with open(self.version_dir(model, version) / relative, "rb") as handle:
                while chunk := handle.read(HASH_CHUNK):
                    crc = google_crc32c.extend(crc, chunk)
        except OSError:
            return None
        return to_gcs_base64(int(crc))

    def new_staging(self, model: str, version: int) -> Path:
        path = self.staging / f"{model}-{version}-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return path

    def discard_staging(self, staged: Path) -> None:
        _remove_tree(staged)

    def install(self, staged: Path, model: str, version: int) -> Path:
        """Make ``staged`` the version directory with one rename (never over an existing one)."""
        target = self.version_dir(model, version)
        if target.exists():
            raise Conflict(f"{target} already exists", model=model, version=version)
        self._make_durable(staged, target.parent)
        os.rename(staged, target)
        fsync_dir(target.parent)
        fsync_dir(self.staging)
        return target

    def replace(self, staged: Path, model: str, version: int) -> Path:
        """Swap an installed version for ``staged`` in one step, so a file-system poll (TF Serving's,
        config_manager's) never sees the version missing: ``renameat2(RENAME_EXCHANGE)`` puts the new
        directory in place and the old one at the staged path, which then goes to the trash. Where the
        filesystem cannot exchange (some NFS, FUSE, overlay mounts) the fallback is two renames, old →
        trash then staged → place, with a window of microseconds in which the version is absent."""
        target = self.version_dir(model, version)
        self._make_durable(staged, target.parent)
        trashed = self.trash / f"{TRASH_PREFIX}{model}-{version}-{int(time.time())}-{secrets.token_hex(2)}"
        if target.exists() and exchange_paths(staged, target):
            fsync_dir(target.parent)
            os.rename(staged, trashed)  # staged now holds the old version
        else:
            if target.exists():
                logger.info(
                    "atomic exchange not supported here; replacing with two renames", extra={"path": str(target)}
                )
                os.rename(target, trashed)
                fsync_dir(self.trash)
            os.rename(staged, target)
            fsync_dir(target.parent)
        fsync_dir(self.trash)
        fsync_dir(self.staging)
        _remove_tree(trashed)
        return target

    def _make_durable(self, staged: Path, parent: Path) -> None:
        """Files were fsynced by the downloader; fsync every directory, deepest first."""
        directories = sorted((p for p in staged.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*directories, staged]:
            fsync_dir(directory)
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
