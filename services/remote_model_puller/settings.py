"""Settings of the remote_model_puller (environment, read once in ``__main__``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
