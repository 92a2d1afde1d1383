"""The node registry: who registered (hostname + role), where to reach them, when they were last heard.

Persisted atomically as ``FLEET_STATE_DIR/registry.json`` so a restarted master knows its fleet at once.
A registration that adds or changes a sidecar is on disk before the request is answered; a heartbeat
that only refreshes ``last_seen`` is written at the next flush (losing one on a crash only makes a node
look a few seconds older until its next heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.atomic import atomic_write_json, remove_stale_temps
from services.common.contracts import Document, NodeRole, Registration

logger = logging.getLogger(__name__)


class SidecarRecord(BaseModel):
    """One registered sidecar. Times are Unix seconds (wall clock: they survive restarts)."""

    model_config = ConfigDict(extra="ignore")

    hostname: str
    role: NodeRole
    base_url: str
    software_version: str = "unknown"
    started_at: datetime | None = None
    first_seen: float
    last_seen: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.hostname, self.role)


class RegistryDocument(Document):
    """``registry.json``."""

    sidecars: list[SidecarRecord] = Field(default_factory=list)
    written_at: datetime | None = None


class Registry:
    """In-memory registry with atomic persistence; safe to use from one event loop."""

    def __init__(self, path: Path, *, stale_after: float, drop_after: float) -> None:
        self.path = path
        self.stale_after = stale_after
        self.drop_after = drop_after
        self._sidecars: dict[tuple[str, str], SidecarRecord] = {}
        self._version = 0
        self._saved_version = 0
        self._lock = asyncio.Lock()
        #: The last save's failure (None after a good one): master's /healthz turns red on it.
        self.save_error: str | None = None

    def load(self) -> int:
        """Read ``registry.json`` (a missing or unreadable file starts an empty registry); returns the count."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path.parent)
        try:
            document = RegistryDocument.read(self.path)
        except FileNotFoundError:
            return 0
        except (ValidationError, ValueError, OSError) as exc:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            logger.error("registry %s unreadable (%s); moved aside to %s", self.path, exc, aside)
            return 0
        self._sidecars = {record.key: record for record in document.sidecars}
        logger.info("registry loaded: %s sidecars", len(self._sidecars), extra={"path": str(self.path)})
        return len(self._sidecars)

    def upsert(self, registration: Registration, *, now: float | None = None) -> tuple[SidecarRecord, bool]:
        """Record a registration/heartbeat; returns (record, changed) — changed means "must persist now"."""
        now = time.time() if now is None else now
        key = (registration.hostname, registration.role)
        old = self._sidecars.get(key)
        record = SidecarRecord(
            hostname=registration.hostname,
            role=registration.role,
            base_url=registration.base_url,
            software_version=registration.software_version,
            started_at=registration.started_at,
            first_seen=old.first_seen if old else now,
            last_seen=now,
        )
        changed = old is None or (old.base_url, old.software_version, old.started_at) != (
            record.base_url,
            record.software_version,
            record.started_at,
        )
        self._sidecars[key] = record
        self._version += 1
        if changed:
            logger.info(
                "sidecar registered",
                extra={"node": record.hostname, "role": record.role, "base_url": record.base_url},
            )
        return record, changed

    def drop_where(self, refusal: Callable[[SidecarRecord], str | None]) -> list[SidecarRecord]:
        """Forget sidecars for which ``refusal`` gives a reason (e.g. a URL no longer allowed)."""
        dropped: list[SidecarRecord] = []
        for key, record in list(self._sidecars.items()):
            reason = refusal(record)
            if reason is not None:
                del self._sidecars[key]
                dropped.append(record)
                logger.warning("sidecar forgotten: %s", reason, extra={"node": record.hostname, "role": record.role})
        if dropped:
            self._version += 1
        return dropped

    def sidecars(self) -> list[SidecarRecord]:
        """Every registered sidecar, sorted by hostname then role."""
        return [self._sidecars[k] for k in sorted(self._sidecars)]

    def hostnames(self) -> list[str]:
        """Registered hostnames, sorted."""
        return sorted({h for h, _ in self._sidecars})

    def for_host(self, hostname: str) -> list[SidecarRecord]:
        """The sidecars of one node (empty when unknown)."""
        return sorted((r for (h, _), r in self._sidecars.items() if h == hostname), key=lambda r: r.role)

    def is_stale(self, record: SidecarRecord, *, now: float | None = None) -> bool:
        """Silent for longer than ``stale_after`` seconds."""
        now = time.time() if now is None else now
        return now - record.last_seen > self.stale_after

    def prune(self, *, now: float | None = None) -> list[SidecarRecord]:
        """Drop sidecars silent for longer than ``drop_after``; returns what was dropped."""
        now = time.time() if now is None else now
        dropped = [r for r in self._sidecars.values() if now - r.last_seen > self.drop_after]
        for record in dropped:
            del self._sidecars[record.key]
            logger.warning(
                "sidecar dropped after %.0fs of silence",
                now - record.last_seen,
                extra={"node": record.hostname, "role": record.role},
            )
        if dropped:
            self._version += 1
        return dropped

    @property
    def dirty(self) -> bool:
        return self._version != self._saved_version

    async def save(self) -> None:
        """Persist the current content atomically; concurrent callers share one write."""
        wanted = self._version
        async with self._lock:
            if self._saved_version >= wanted:
                return
            version = self._version
            document = RegistryDocument(sidecars=self.sidecars(), written_at=datetime.now(UTC))
            try:
                await asyncio.to_thread(atomic_write_json, self.path, document)
            except OSError as exc:
                self.save_error = f"{type(exc).__name__}: {exc}"
                raise
            self._saved_version = version
            self.save_error = None
