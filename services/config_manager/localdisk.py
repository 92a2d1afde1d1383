"""The model volume as config_manager sees it: versions on disk, desired.json, manifests, failed.json.

Plain file I/O, no tfserving: the planner's inputs that live on ``LOCAL_MODEL_DIRECTORY``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from services.common.atomic import atomic_write_json, atomic_write_text
from services.common.contracts import FailedDocument, FailedVersion, LocalDesired, Manifest
from services.common.contracts.base import is_valid_model_name, utcnow
from services.common.contracts.local import desired_path, failed_path, fleet_dir, manifest_path
from services.common.errors import VolumeUnreadable
from services.common.tfs import EMPTY_CONFIG

logger = logging.getLogger(__name__)

DIR_MODE = 0o775
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def prepare_volume(local_root: Path, config_file: Path) -> None:
    """Create ``LOCAL/.fleet/`` and a first ``model_config_list {}`` if absent, readable by tfserving."""
    os.umask(0o002)
    for directory in (local_root, fleet_dir(local_root), trash_dir(local_root), config_file.parent):
        directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if not config_file.exists() or config_file.stat().st_size == 0:
        atomic_write_text(config_file, EMPTY_CONFIG)
        logger.info("created %s", config_file, extra={"path": str(config_file)})


def trash_dir(local_root: Path) -> Path:
    """Where GC renames versions before deleting them."""
    return fleet_dir(local_root) / "trash"


def is_version_name(name: str) -> bool:
    """True for canonical version directory names (``7``, not ``007``, ``7.tmp`` or ``-1``)."""
    return name.isdigit() and str(int(name)) == name


ListDir = Callable[[Path], AbstractContextManager[Iterator[os.DirEntry[str]]]]


def scan_models(local_root: Path, *, listdir: ListDir = os.scandir) -> dict[str, frozenset[int]]:
    """Model name → versions installed on disk (a canonical directory holding a saved_model file).

    Raises :class:`VolumeUnreadable` on any read error (EIO, EACCES, EMFILE, ESTALE, the root gone): a
    partial view would look like versions that vanished, and a read error must never change what
    serves. Only an entry removed while it is listed (GC, the puller's swap) is skipped. ``listdir`` is
    the declared seam through which tests inject EIO.
    """
    found: dict[str, frozenset[int]] = {}
    try:
        with listdir(local_root) as entries:
            model_dirs = [d for d in entries if is_valid_model_name(d.name) and d.is_dir()]
        for model_dir in model_dirs:
            versions = _scan_versions(Path(model_dir.path), listdir)
            if versions is not None:
                found[model_dir.name] = versions
    except OSError as exc:
        raise VolumeUnreadable(f"cannot read the model volume: {exc}", path=str(local_root)) from exc
    return found


def _scan_versions(model_dir: Path, listdir: ListDir) -> frozenset[int] | None:
    """Installed versions of one model (None: the directory went away while listed)."""
    try:
        with listdir(model_dir) as entries:
            children = [c for c in entries if is_version_name(c.name) and c.is_dir()]
    except FileNotFoundError:
        return None
    return frozenset(int(child.name) for child in children if _has_saved_model(Path(child.path)))


def _has_saved_model(version_dir: Path) -> bool:
    """True when a saved_model file is there; a read error other than "not there" is raised."""
    for name in SAVED_MODEL_FILES:
        try:
            if stat.S_ISREG(os.stat(version_dir / name).st_mode):
                return True
        except (FileNotFoundError, NotADirectoryError):
            continue
    return False


@dataclass
class DesiredReading:
    """desired.json as last read: the document in force and the error of the latest read, if any."""

    document: LocalDesired | None = None
    error: str | None = None
    mtime_ns: int | None = None


class DesiredReader:
    """Reads desired.json; a missing or garbage file keeps the last good document and reports why."""

    def __init__(self, local_root: Path, *, path: Path | None = None) -> None:
        self.path = path or desired_path(local_root)
        self.reading = DesiredReading()

    def read(self) -> DesiredReading:
        """The document in force (re-parsed only when the file changed)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.reading.error = f"{self.path} not found (the puller has not written it yet)"
            self.reading.mtime_ns = None
            return self.reading
        if stat.st_mtime_ns == self.reading.mtime_ns and self.reading.error is None:
            return self.reading
        try:
            document = LocalDesired.read(self.path)
        except (OSError, ValueError, ValidationError) as exc:
            error = f"{self.path} is unreadable, last good target kept: {_short(exc)}"
            if error != self.reading.error:
                logger.error("%s", error, extra={"path": str(self.path)})
            self.reading.error = error
        else:
            self.reading.document = document
            self.reading.error = None
        self.reading.mtime_ns = stat.st_mtime_ns
        return self.reading


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


GENERATED_SUFFIX = "+generated"


class ManifestCache:
    """Manifest fingerprints by (model, version), re-read only when the manifest file changes.

    A version that holds a generated warm-up file has the fingerprint ``<bytes>+generated``: a load
    failure with that file is recorded against it, and once the file is removed the version is the
    bytes alone again, judged afresh (a generated file never marks the bucket's bytes bad).
    """

    def __init__(self, local_root: Path) -> None:
        self.local_root = local_root
        self._cache: dict[tuple[str, int], tuple[int, str | None, tuple[str, ...]]] = {}

    def _read(self, model: str, version: int) -> tuple[str | None, tuple[str, ...]]:
        path = manifest_path(self.local_root, model, version)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            self._cache.pop((model, version), None)
            return None, ()
        cached = self._cache.get((model, version))
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        try:
            manifest = Manifest.read(path)
            value: tuple[str | None, tuple[str, ...]] = (manifest.fingerprint(), tuple(manifest.generated))
        except (OSError, ValueError, ValidationError):
            value = (None, ())
        self._cache[(model, version)] = (mtime, *value)
        return value

    def generated_files(self, model: str, version: int) -> list[Path]:
        """The generated files of an installed version that are still there."""
        _, generated = self._read(model, version)
        version_dir = self.local_root / model / str(version)
        return [version_dir / name for name in generated if (version_dir / name).is_file()]

    def fingerprint(self, model: str, version: int) -> str | None:
        """The manifest fingerprint of an installed version; None without a (readable) manifest."""
        value, _ = self._read(model, version)
        if value is not None and self.generated_files(model, version):
            return value + GENERATED_SUFFIX
        return value


class FailedStore:
    """``LOCAL/.fleet/failed.json``: config_manager is its only writer."""

    def __init__(self, local_root: Path) -> None:
        self.path = failed_path(local_root)
        self.document = FailedDocument()

    def load(self) -> None:
        """Read the file at start (a garbage file is logged and treated as empty)."""
        try:
            self.document = FailedDocument.read(self.path)
        except FileNotFoundError:
            self.document = FailedDocument()
        except (OSError, ValueError, ValidationError) as exc:
            logger.error("failed.json unreadable, starting empty: %s", _short(exc), extra={"path": str(self.path)})
            self.document = FailedDocument()

    def failed_versions(self, model: str, fingerprints: dict[int, str | None]) -> dict[int, str]:
        """Version → reason for versions of ``model`` failed with the bytes on disk now."""
        return {
            entry.version: f"{entry.error_code}: {entry.message}"
            for entry in self.document.versions
            if entry.model == model
            and entry.version in fingerprints
            and entry.fingerprint == fingerprints[entry.version]
        }

    def record(
        self,
        *,
        model: str,
        version: int,
        code: str,
        message: str,
        fingerprint: str | None,
        golden_digest: str | None = None,
    ) -> None:
        """Record (or refresh) a failed load and write the file atomically."""
        entry = self.document.find(model, version)
        attempts = 1
        if entry is not None:
            attempts = entry.attempts + 1
            self.document.versions.remove(entry)
        self.document.versions.append(
            FailedVersion(
                model=model,
                version=version,
                message=message[:2000],
                error_code=code,
                fingerprint=fingerprint,
                failed_at=utcnow(),
                attempts=attempts,
                golden_digest=golden_digest,
            )
        )
        atomic_write_json(self.path, self.document)

    def forget(self, model: str, version: int) -> None:
        """Drop the record of (model, version): it is judged again (writes the file)."""
        entry = self.document.find(model, version)
        if entry is not None:
            self.document.versions.remove(entry)
            atomic_write_json(self.path, self.document)

    def prune(self, on_disk: dict[str, frozenset[int]], fingerprints: dict[str, dict[int, str | None]]) -> None:
        """Forget failures whose bytes are gone: the version left the disk or was replaced."""

        def current(entry: FailedVersion) -> bool:
            if entry.version not in on_disk.get(entry.model, frozenset()):
                return False
            known = fingerprints.get(entry.model)
            return known is None or entry.version not in known or known[entry.version] == entry.fingerprint

        kept = [e for e in self.document.versions if current(e)]
        if len(kept) != len(self.document.versions):
            self.document.versions = kept
            atomic_write_json(self.path, self.document)


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free
