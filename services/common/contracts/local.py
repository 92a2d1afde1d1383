"""Documents on the shared model volume, under ``LOCAL/.fleet/``.

- ``desired.json`` (written by the puller): per model the concrete ``serve`` and ``keep`` sets.
- ``manifests/<model>/<version>.json`` (written by the puller once a version is installed).
- ``failed.json`` (written by config_manager): versions that failed to load, keyed by the manifest
  fingerprint so a version is retried only when its bytes change.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.contracts.base import Document, utcnow

FLEET_DIR = ".fleet"


def fleet_dir(local_root: Path) -> Path:
    """``LOCAL/.fleet`` — hidden from TF Serving (not an integer name) and from model listings."""
    return local_root / FLEET_DIR


def desired_path(local_root: Path) -> Path:
    return fleet_dir(local_root) / "desired.json"


def desired_intent_path(local_root: Path) -> Path:
    """The desired.json a puller pass is working toward, written before it installs anything.

    config_manager's GC keeps every version this document or desired.json serves or keeps, so a
    version installed for a desired.json not written yet is never taken for unused.
    """
    return fleet_dir(local_root) / "desired.next.json"


def failed_path(local_root: Path) -> Path:
    return fleet_dir(local_root) / "failed.json"


def manifest_path(local_root: Path, model: str, version: int) -> Path:
    return fleet_dir(local_root) / "manifests" / model / f"{version}.json"


class LocalModelTarget(BaseModel):
    """What one node should do with one model."""

    model_config = ConfigDict(extra="ignore")

    serve: list[int] = Field(default_factory=list)
    keep: list[int] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)
    enabled: bool = True
    allow_signature_change: bool = False

    @model_validator(mode="after")
    def _keep_covers_serve(self) -> LocalModelTarget:
        self.serve = sorted(set(self.serve))
        self.keep = sorted(set(self.keep) | set(self.serve))
        return self


class LocalDesired(Document):
    """``LOCAL/.fleet/desired.json``."""

    models: dict[str, LocalModelTarget] = Field(default_factory=dict)
    generation: int | None = Field(default=None, description="desired-state document generation; None = defaults")
    written_at: datetime = Field(default_factory=utcnow)
    written_by: str | None = None


class ManifestObject(BaseModel):
    """One object of an installed version, as it was in the bucket."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="path relative to the version directory")
    size: int = Field(ge=0)
    crc32c: str | None = Field(default=None, description="base64 big-endian CRC32C, as GCS reports it")
    generation: int


class Manifest(Document):
    """``LOCAL/.fleet/manifests/<model>/<version>.json``: the bytes of an installed version."""

    model: str
    version: int = Field(ge=0)
    source: str = Field(default="", description="gs:// URL of the version directory")
    objects: list[ManifestObject]
    total_bytes: int = Field(ge=0)
    installed_at: datetime = Field(default_factory=utcnow)
    generated: list[str] = Field(
        default_factory=list,
        description="files the puller wrote into the version (a generated warm-up file): not from the bucket, "
        "not in objects, never checked for drift",
    )

    def fingerprint(self) -> str:
        """Identity of the version's bytes: a hash over (name, generation) of every object."""
        return generations_fingerprint((o.name, o.generation) for o in self.objects)


def generations_fingerprint(pairs: object) -> str:
    """Stable hash of (name, generation) pairs — equal iff the same objects at the same generations."""
    digest = hashlib.sha256()
    for name, generation in sorted(pairs):  # type: ignore[call-overload]
        digest.update(f"{name}\0{generation}\n".encode())
    return digest.hexdigest()[:32]


class FailedVersion(BaseModel):
    """A version that failed to load, with TF Serving's message."""

    model_config = ConfigDict(extra="ignore")

    model: str
    version: int
    message: str
    error_code: str = "UNKNOWN"
    fingerprint: str | None = Field(default=None, description="manifest fingerprint of the bytes that failed")
    failed_at: datetime = Field(default_factory=utcnow)
    attempts: int = 1
    golden_digest: str | None = Field(default=None, description="golden set a GOLDEN_CHECK_FAILED verdict is for")


class FailedDocument(Document):
    """``LOCAL/.fleet/failed.json``."""

    versions: list[FailedVersion] = Field(default_factory=list)

    def find(self, model: str, version: int) -> FailedVersion | None:
        for entry in self.versions:
            if entry.model == model and entry.version == version:
                return entry
        return None

    def is_failed(self, model: str, version: int, fingerprint: str | None) -> bool:
        """True if this exact version (same bytes) is recorded as failed."""
        entry = self.find(model, version)
        return entry is not None and (entry.fingerprint is None or entry.fingerprint == fingerprint)
