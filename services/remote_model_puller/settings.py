"""Settings of the remote_model_puller (environment, read once in ``__main__``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from services.common.settings import BucketSettings, NodeSettings

MiB = 1 << 20


class Settings(NodeSettings, BucketSettings):
    """Runbook variables (HOSTNAME, LOCAL_MODEL_DIRECTORY, REMOTE_MODEL_DIRECTORY, CLOUDSDK_CONFIG) + FLEET_*."""

    port: int = 8001
    download_workers: int = Field(default=8, ge=1, le=64, description="parallel ranged reads")
    download_range_bytes: int = Field(
        default=32 * MiB, ge=MiB, multiple_of=4096, description="objects larger are split in ranges"
    )
    download_buffer_bytes: int = Field(default=MiB, ge=64 * 1024, multiple_of=4096, description="read size per worker")
    download_direct_io: bool = Field(default=True, description="write with O_DIRECT where the filesystem takes it")
    download_attempts: int = Field(default=3, ge=1, le=10, description="tries per range / per corrupt object")
    download_retry_deadline_seconds: float = Field(
        default=60.0, gt=0, description="no new try of a range starts later than this after its first"
    )
    download_engine: Literal["native", "sdk"] = Field(
        default="native", description="native: the own media client; sdk: google-cloud-storage's downloads"
    )
    generated_warmup_repeat: int = Field(
        default=10, ge=0, le=1000, description="records per golden request in a generated warm-up file (0: none)"
    )
    disk_margin_bytes: int = Field(default=1024 * MiB, ge=0, description="free space left after a version")
    gcs_endpoint: str = Field(default="https://storage.googleapis.com", description="JSON API media endpoint")
    mass_removal_guard: bool = Field(default=True, description="freeze models that vanish from the listing")
    # Event-driven sync (opt-in): bucket notifications on Pub/Sub wake the puller; listing is the fallback.
    events_project: str | None = Field(default=None, description="Pub/Sub project of the bucket's notification topic")
    events_topic: str | None = Field(default=None, description="topic ID the bucket notifies (unset: poll only)")
    events_subscription: str | None = Field(
        default=None, description="this node's subscription ID (default: modelfleet-puller-<HOSTNAME>)"
    )
    events_check_seconds: float = Field(default=10.0, gt=0, description="how often the subscription is checked")
    events_max_lag_seconds: float = Field(
        default=60.0, gt=0, description="an event pending longer than this triggers a full reconcile"
    )
    full_reconcile_seconds: float = Field(default=600.0, gt=0, description="full listing interval with events on")
    pubsub_emulator_host: str | None = Field(default=None, validation_alias=AliasChoices("PUBSUB_EMULATOR_HOST"))

    @field_validator("events_project", "events_topic", "events_subscription", "pubsub_emulator_host")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value or "").strip() or None  # a stack file passes ${VAR:-}

    @property
    def events_enabled(self) -> bool:
        return self.events_project is not None and self.events_topic is not None

    def subscription_id(self) -> str:
        """This node's subscription: ``FLEET_EVENTS_SUBSCRIPTION``, else one named from HOSTNAME."""
        if self.events_subscription:
            return self.events_subscription
        cleaned = re.sub(r"[^A-Za-z0-9_.~+%-]", "-", self.hostname)
        return f"modelfleet-puller-{cleaned}"[:255]
