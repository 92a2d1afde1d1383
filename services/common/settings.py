"""Settings shared by every service, read once from the environment at start.

Runbook names (``HOSTNAME``, ``LOCAL_MODEL_DIRECTORY``, ...) are kept unchanged; the project's own
settings all start with ``FLEET_``. Every setting has a default that runs the local fleet.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.auth import TokenBook

logger = logging.getLogger(__name__)


class FleetSettings(BaseSettings):
    """Base settings of every service. Subclasses add their own fields and set ``port``'s default."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore", populate_by_name=True)

    hostname: str = Field(
        default_factory=socket.gethostname, validation_alias=AliasChoices("HOSTNAME", "FLEET_HOSTNAME")
    )
    host: str = "0.0.0.0"
    port: int = 8000
    advertise_url: str | None = None
    master_url: str = "http://mlmodelmanager:80"
    state_dir: Path = Path("/app")
    token_file: Path | None = None
    # `[read|admin ]name:token` lines (services/common/auth.py). master: its API's roles. Sidecars
    # (optional): tokens that may read /v1/status and /v1/config besides the fleet token.
    admin_tokens_file: Path | None = None
    # FLEET_AUTH=disabled: start without token files on a non-loopback address (services/common/auth.py).
    auth: Literal["enabled", "disabled"] = "enabled"
    log_format: Literal["json", "text", "auto"] = "auto"
    log_level: str = "INFO"
    http_timeout_seconds: float = Field(default=5.0, gt=0)
    register_interval_seconds: float = Field(default=15.0, gt=0)
    # /healthz (services/common/health.py): a worker whose last pass ended longer ago than
    # max(k * its period, floor) is stale; a pass with no progress for max(k * period, stuck floor) is
    # stuck. k = health_missed_passes. The state dir's write probe is reused this long.
    health_missed_passes: float = Field(default=3.0, ge=1)
    health_min_stale_seconds: float = Field(default=60.0, gt=0)
    health_stuck_seconds: float = Field(default=600.0, gt=0)
    health_probe_cache_seconds: float = Field(default=5.0, ge=0)

    @field_validator("master_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def base_url(self) -> str:
        """The URL other services use to reach this one (registration payload)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        return f"http://{self.hostname}:{self.port}"

    def token_book(self) -> TokenBook | None:
        """The tokens file's roles (None when ``FLEET_ADMIN_TOKENS_FILE`` is unset)."""
        return TokenBook.load(self.admin_tokens_file) if self.admin_tokens_file is not None else None

    def fleet_token(self) -> str | None:
        """The fleet token, read from ``FLEET_TOKEN_FILE`` (None when unset: auth disabled)."""
        return read_token_file(self.token_file)


class NodeSettings(FleetSettings):
    """Settings of the two per-node sidecars, which share the model volume."""

    local_model_directory: Path = Field(
        default=Path("/local_saved_models"),
        validation_alias=AliasChoices("LOCAL_MODEL_DIRECTORY", "FLEET_LOCAL_MODEL_DIRECTORY"),
    )
    sync_interval_seconds: float = Field(default=30.0, gt=0)


class BucketSettings(BaseSettings):
    """Where the models live in GCS and how to authenticate (puller and master)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore", populate_by_name=True)

    remote_model_directory: str = Field(
        default="gs://models/models",
        validation_alias=AliasChoices("REMOTE_MODEL_DIRECTORY", "FLEET_REMOTE_MODEL_DIRECTORY"),
    )
    cloudsdk_config: Path | None = Field(
        default=None, validation_alias=AliasChoices("CLOUDSDK_CONFIG", "FLEET_CLOUDSDK_CONFIG")
    )
    google_application_credentials: Path | None = Field(
        default=None, validation_alias=AliasChoices("GOOGLE_APPLICATION_CREDENTIALS")
    )
    storage_emulator_host: str | None = Field(default=None, validation_alias=AliasChoices("STORAGE_EMULATOR_HOST"))
    gcs_project: str = "modelfleet"
    gcs_timeout_seconds: float = Field(default=30.0, gt=0)
    # auto: google-auth credentials, except anonymous against STORAGE_EMULATOR_HOST without a credentials
    # file; google: always google-auth (file, else ADC: gcloud's file, the metadata server); anonymous: never.
    gcs_auth: Literal["auto", "google", "anonymous"] = "auto"
    # The media client refreshes an access token this long before it expires (google-auth's own
    # threshold, used by the SDK's session, is 3 min 45 s).
    gcs_token_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    # OAuth token endpoint for authorized_user / service-account credentials (Private Service Connect,
    # a test stand-in). google-auth ignores an authorized_user file's own token_uri on purpose (a file
    # from elsewhere must not send the refresh token anywhere), so the operator's setting is the one way.
    gcs_token_uri: str | None = None
    # Network of the bucket clients, under the names requests, curl and OpenSSL read.
    requests_ca_bundle: Path | None = Field(default=None, validation_alias=AliasChoices("REQUESTS_CA_BUNDLE"))
    ssl_cert_file: Path | None = Field(default=None, validation_alias=AliasChoices("SSL_CERT_FILE"))
    https_proxy: str | None = Field(default=None, validation_alias=AliasChoices("HTTPS_PROXY", "https_proxy"))
    no_proxy: str | None = Field(default=None, validation_alias=AliasChoices("NO_PROXY", "no_proxy"))
    complete_marker: str | None = None
    quiet_period_seconds: float = Field(default=60.0, ge=0)

    @field_validator("remote_model_directory")
    @classmethod
    def _gs_url(cls, value: str) -> str:
        if not value.startswith("gs://") or len(value) <= len("gs://"):
            raise ValueError("REMOTE_MODEL_DIRECTORY must look like gs://bucket[/prefix]")
        return value.rstrip("/")

    @field_validator("complete_marker")
    @classmethod
    def _marker(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if "/" in value:
            raise ValueError("FLEET_COMPLETE_MARKER must be a plain object name such as _COMPLETE")
        return value or None  # empty = no marker (lets a stack file pass ${VAR:-})

    @field_validator("https_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if value and not value.startswith("http://") and "://" in value:
            raise ValueError("HTTPS_PROXY must be an http:// proxy URL (http://[user:pass@]host:port)")
        return value or None

    @field_validator("requests_ca_bundle", "ssl_cert_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA bundle {value} is not a readable file")
        return value

    @property
    def bucket_name(self) -> str:
        return self.remote_model_directory[len("gs://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """Models prefix inside the bucket, with a trailing slash, or '' for the bucket root."""
        parts = self.remote_model_directory[len("gs://") :].split("/", 1)
        return parts[1].strip("/") + "/" if len(parts) == 2 and parts[1].strip("/") else ""

    def credentials_file(self) -> Path | None:
        """Explicit credentials: GOOGLE_APPLICATION_CREDENTIALS, else $CLOUDSDK_CONFIG's ADC file."""
        if self.google_application_credentials:
            return self.google_application_credentials
        if self.cloudsdk_config:
            candidate = self.cloudsdk_config / "application_default_credentials.json"
            if candidate.is_file():
                return candidate
        return None

    def ca_bundle(self) -> Path | None:
        """The CA bundle that replaces the system store for bucket TLS: REQUESTS_CA_BUNDLE, else SSL_CERT_FILE."""
        return self.requests_ca_bundle or self.ssl_cert_file


def read_token_file(path: Path | None) -> str | None:
    """Read a one-line token file; None when no file is configured."""
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def prepare_state_dir(path: Path) -> None:
    """Create ``FLEET_STATE_DIR`` when missing; a failure is logged, and ``/healthz`` reports it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.error("cannot create the state dir %s: %s", path, exc)
