"""The status payload of each sidecar (``GET /v1/status``), aggregated by master into the cluster view.

One shape for both roles: fields a role does not know stay ``None`` (not reported), so master can merge
the puller's and config_manager's views of a node per model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts.base import Document
from services.common.contracts.registration import NodeRole


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Alarm(_Lenient):
    """Something an operator must look at (mass removal, disk full, tfserving unreachable, ...)."""

    kind: str
    message: str
    model: str | None = None
    since: datetime | None = None
    severity: Literal["warning", "critical"] = "warning"


class DownloadProgress(_Lenient):
    version: int
    bytes_done: int = 0
    bytes_total: int = 0
    rate_bytes_per_second: float = 0.0
    started_at: datetime | None = None


class LiveVersion(_Lenient):
    """A version as tfserving reports it (GetModelStatus)."""

    version: int
    state: str
    error_code: int = 0
    error_message: str = ""


class HeldChange(_Lenient):
    """A change config_manager refuses to make on its own (e.g. input signature changed)."""

    version: int
    reason: str
    kind: str = "signature-changed"


class CapacityShortfall(_Lenient):
    """A version that did not fit in tfserving's memory (RESOURCE_EXHAUSTED): not corrupt, waiting for memory."""

    version: int
    bytes_needed: int = Field(description="about: the size of the version's variables")
    message: str = Field(description="tfserving's error message")
    since: datetime | None = None


class TrafficCounters(_Lenient):
    """A model's request counters read from the node's tfserving metrics (cumulative since it started).

    ``requests``: ``:tensorflow:serving:request_count`` by status ("OK", "INVALID_ARGUMENT", ...).
    ``latency_buckets``: ``:tensorflow:serving:request_latency`` of API "Predict" (successful calls), upper
    bound in microseconds ("+Inf" last) → cumulative count, summed over entrypoints (GRPC, REST).
    """

    requests: dict[str, int] = Field(default_factory=dict)
    latency_buckets: dict[str, int] = Field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.requests.items() if status != "OK")


class ModelNodeStatus(_Lenient):
    """One model on one node, from one sidecar's point of view."""

    serve: list[int] = Field(default_factory=list)
    keep: list[int] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)
    remote_complete: list[int] | None = None
    remote_incomplete: dict[str, str] | None = None
    on_disk: list[int] | None = None
    in_config: list[int] | None = None
    config_labels: dict[str, int] | None = None
    live: list[LiveVersion] | None = None
    available: list[int] | None = None
    failed: dict[str, str] = Field(default_factory=dict, description="version → reason")
    held: list[HeldChange] = Field(default_factory=list)
    capacity: list[CapacityShortfall] = Field(default_factory=list)
    drift: list[int] = Field(default_factory=list)
    downloads: list[DownloadProgress] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    traffic: TrafficCounters | None = Field(default=None, description="config_manager only; None = not read")


class SidecarStatus(Document):
    """``GET /v1/status`` of a sidecar."""

    hostname: str
    role: NodeRole
    software_version: str = "unknown"
    ready: bool = False
    syncing: bool = False
    last_sync_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    alarms: list[Alarm] = Field(default_factory=list)
    models: dict[str, ModelNodeStatus] = Field(default_factory=dict)
    details: dict[str, object] = Field(default_factory=dict, description="role-specific extras")
