"""The versions this node could not install, kept until their bytes change.

One record per (model, version): the remote fingerprint (object names and generations) that failed, why,
and the kind — ``download-failed`` (bytes that could not be verified: crc32c, gzip transcoding, a wrong
length) or ``install-failed`` (the node could not write them: a name the filesystem refuses, an object
that is both a file and a prefix, a permission error, a conflict in staging or at the target). A
recorded version does not count as complete and is not fetched again until its listing fingerprint
differs (new generations = new bytes).

Kept in ``LOCAL/.fleet/puller-bad-downloads.json`` (on the model volume, so it outlives the container),
written atomically: ``{"versions": [{"model", "version", "fingerprint", "reason", "kind"}]}``. Private to
the puller. An unreadable file is ignored with a warning: the cost is at most one more attempt per version.
An operator who fixed the node (permissions, a stray file) removes an entry or the file: every pass
re-reads it when it changed on disk, so the version is tried again without a restart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.common.atomic import atomic_write_json
from services.common.contracts.local import fleet_dir

logger = logging.getLogger(__name__)

FILE_NAME = "puller-bad-downloads.json"
Key = tuple[str, int]
FailureKind = Literal["download-failed", "install-failed"]


@dataclass(frozen=True)
class VersionFailure:
    fingerprint: str
    reason: str
    kind: FailureKind = "download-failed"


class FailedVersions:
    """The record, in memory and on the volume; every change is saved at once."""

    def __init__(self, local_root: Path) -> None:
        self.path = fleet_dir(local_root) / FILE_NAME
        self._seen: tuple[int, int] | None = None
        self.entries: dict[Key, VersionFailure] = self._load()

    def reload_if_changed(self) -> None:
        """Pick up an operator's edit (an entry or the whole file removed) since the last read or write."""
        if self._stat() != self._seen:
            self.entries = self._load()

    def record(self, key: Key, failure: VersionFailure) -> None:
        self.entries[key] = failure
        self._save()

    def clear(self, key: Key) -> None:
        if self.entries.pop(key, None) is not None:
            self._save()

    def fingerprints(self) -> dict[Key, str]:
        """(model, version) → the remote fingerprint that failed (what planning compares)."""
        return {key: failure.fingerprint for key, failure in self.entries.items()}

    def reasons(self, model: str) -> dict[int, str]:
        return {v: failure.reason for (m, v), failure in self.entries.items() if m == model}

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def _load(self) -> dict[Key, VersionFailure]:
        self._seen = self._stat()
        try:
            entries = json.loads(self.path.read_text())["versions"]
            return {
                (str(e["model"]), int(e["version"])): VersionFailure(
                    fingerprint=str(e["fingerprint"]),
                    reason=str(e["reason"]),
                    kind="install-failed" if e.get("kind") == "install-failed" else "download-failed",
                )
                for e in entries
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("ignoring unreadable %s: %s", self.path, exc)
            return {}

    def _save(self) -> None:
        """A failure to write (full disk) is logged; the records stay in memory."""
        entries = [
            {"model": m, "version": v, "fingerprint": f.fingerprint, "reason": f.reason, "kind": f.kind}
            for (m, v), f in sorted(self.entries.items())
        ]
        try:
            atomic_write_json(self.path, {"versions": entries})
            self._seen = self._stat()
        except OSError as exc:
            logger.error("could not record failed versions: %s", exc)
