"""Registration: ``POST /v1/nodes/register`` on master, repeated as the heartbeat."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from services.common.contracts.base import Document, utcnow

NodeRole = Literal["puller", "config_manager"]


class Registration(Document):
    """An idempotent upsert keyed by (hostname, role)."""

    hostname: str = Field(min_length=1, max_length=253)
    role: NodeRole
    base_url: str = Field(min_length=1, max_length=2048)
    software_version: str = "unknown"
    started_at: datetime = Field(default_factory=utcnow)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not all(c.isalnum() or c in "-._" for c in value):
            raise ValueError("hostname may contain letters, digits, '-', '.', '_' only")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")
