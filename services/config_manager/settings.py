"""config_manager settings: runbook names unchanged, the project's own under ``FLEET_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from services.common.settings import NodeSettings


class Settings(NodeSettings):
    """Everything config_manager reads from the environment, once, at start."""

    port: int = 8002
    tensorflow_serving_config_file: Path = Field(
        default=Path("/serving_config/models.config"),
        validation_alias=AliasChoices("TENSORFLOW_SERVING_CONFIG_FILE", "FLEET_TENSORFLOW_SERVING_CONFIG_FILE"),
    )
    tensorflow_serving_grpc_target: str = Field(
        default="localhost:8500",
        validation_alias=AliasChoices("TENSORFLOW_SERVING_GRPC_TARGET", "FLEET_TENSORFLOW_SERVING_GRPC_TARGET"),
    )
    # tfserving's Prometheus page (its REST port, --monitoring_config_file): request counts and latency per
    # model, reported in status for master's rollout gates ("" = not read).
    tensorflow_serving_metrics_url: str = "http://localhost:8501/monitoring/prometheus/metrics"
    metrics_timeout_seconds: float = Field(default=1.0, gt=0)
    # Deadlines of single calls to tfserving.
    reload_timeout_seconds: float = Field(default=30.0, gt=0)
    status_timeout_seconds: float = Field(default=5.0, gt=0)
    # Deadline of one golden request (Predict) against a candidate version.
    golden_timeout_seconds: float = Field(default=10.0, gt=0)
    # After a reload: poll GetModelStatus at most this long in one pass, every poll interval.
    load_wait_seconds: float = Field(default=60.0, gt=0)
    status_poll_interval_seconds: float = Field(default=0.25, gt=0)
    # A version not AVAILABLE this long after it entered models.config is recorded as failed.
    load_timeout_seconds: float = Field(default=420.0, gt=0)
    # A version re-added to the config may still show its old END error this long.
    load_start_grace_seconds: float = Field(default=10.0, ge=0)
    # A version dropped from models.config is added back only after this long: tfserving must have
    # polled the file system without it (keep above its --file_system_poll_wait_seconds).
    readd_delay_seconds: float = Field(default=3.0, ge=0)
    # How often desired.json and the model directories are checked for changes (0 disables).
    watch_interval_seconds: float = Field(default=1.0, ge=0)
    # Reconcile steps in one pass (a roll needs two: add the new version, then drop the old one).
    max_steps_per_pass: int = Field(default=6, ge=1)
    # A version that did not fit in memory (RESOURCE_EXHAUSTED) is retried when a loaded version goes
    # away, and at the latest after this long (memory may be freed outside tfserving's view).
    capacity_retry_seconds: float = Field(default=300.0, gt=0)
    gc_enabled: bool = True
    # Below this many free bytes on the model volume, kept-but-not-served versions are removed too.
    low_disk_free_bytes: int = Field(default=1 << 30, ge=0)
