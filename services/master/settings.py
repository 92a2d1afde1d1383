"""master's settings: the fleet base, the bucket, and master's own FLEET_* knobs."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.common.settings import BucketSettings, FleetSettings
from services.master.addresses import DEFAULT_SIDECAR_ADDRESSES, SidecarAddresses


class Settings(FleetSettings, BucketSettings):
    """Settings of the master service (one replica, port 80)."""

    port: int = 80
    admin_tokens_file: Path | None = Field(
        default=None,
        description="`[read|admin ]name:token` lines; the name goes into the audit log (None = API open)",
    )
    sidecar_addresses: str = Field(
        default=DEFAULT_SIDECAR_ADDRESSES, description="host:port allow-list of the sidecar URLs master calls"
    )
    node_stale_seconds: float = Field(default=60.0, gt=0, description="no registration for this long = stale")
    node_drop_seconds: float = Field(default=3600.0, gt=0, description="no registration for this long = dropped")
    poll_interval_seconds: float = Field(default=10.0, gt=0, description="how often every sidecar is polled")
    node_timeout_seconds: float = Field(default=3.0, gt=0, description="per-node deadline of polls and fan-outs")
    poll_concurrency: int = Field(default=256, ge=1, le=2048, description="sidecars polled/triggered at once")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="larger request bodies get 413")
    bucket_deadline_seconds: float = Field(default=10.0, gt=0, description="overall deadline of one bucket call")
    bucket_cache_seconds: float = Field(default=10.0, ge=0, description="reuse of a bucket listing for reads")
    golden_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="body limit of golden-set uploads (PUT /v1/golden/...)"
    )
    golden_test_timeout_seconds: float = Field(default=60.0, gt=0, description="deadline of a golden test per node")
    audit_read_limit: int = Field(default=500, ge=1, description="most audit entries read per request")

    @field_validator("sidecar_addresses")
    @classmethod
    def _addresses(cls, value: str) -> str:
        SidecarAddresses(value)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _drop_after_stale(self) -> Settings:
        if self.node_drop_seconds <= self.node_stale_seconds:
            raise ValueError("FLEET_NODE_DROP_SECONDS must be larger than FLEET_NODE_STALE_SECONDS")
        return self

    def registry_path(self) -> Path:
        """Where the node registry lives (``FLEET_STATE_DIR/registry.json``)."""
        return self.state_dir / "registry.json"
