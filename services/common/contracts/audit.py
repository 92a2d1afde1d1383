"""Audit log: ``_fleet/audit/`` in the bucket, one object per change of the desired-state document."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.common.contracts.base import Document, utcnow
from services.common.contracts.desired_state import ModelPolicy


class AuditEntry(Document):
    """Who changed what, when: ``before`` → ``after`` (None = model absent from the document)."""

    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    model: str
    before: ModelPolicy | None = None
    after: ModelPolicy | None = None
    generation: int | None = Field(default=None, description="document generation after the change")
    serving_before: list[int] | None = Field(default=None, description="versions served before the change")
    reason: str | None = Field(default=None, description="why (e.g. the rollout gate that failed, with figures)")

    def object_name(self) -> str:
        """Sortable object name under ``_fleet/audit/``: time first, so a listing is chronological."""
        stamp = self.at.strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}-{self.model}-{self.generation or 0}.json"
