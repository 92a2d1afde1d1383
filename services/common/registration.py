"""Registration with master: ``POST {master_url}/v1/nodes/register``, repeated as the heartbeat.

Both sidecars run a :class:`Registrar`. It never blocks or breaks its service: master being absent only
shows up as ``registered=False`` / ``last_error`` in the sidecar's status, and the worker backs off
(1, 2, 4 ... seconds, capped at the register interval) until master answers again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from importlib import metadata

import httpx

from services.common.contracts import Registration
from services.common.contracts.base import utcnow
from services.common.contracts.registration import NodeRole
from services.common.errors import Unavailable
from services.common.settings import FleetSettings
from services.common.worker import PeriodicWorker

logger = logging.getLogger(__name__)

REGISTER_PATH = "/v1/nodes/register"


def software_version() -> str:
    """The installed modelfleet version (``unknown`` when running from a bare source tree)."""
    try:
        return metadata.version("modelfleet")
    except metadata.PackageNotFoundError:
        return "unknown"


class Registrar(PeriodicWorker):
    """Upsert this node's (hostname, role) on master every ``register_interval_seconds``."""

    name = "registrar"

    def __init__(
        self,
        settings: FleetSettings,
        role: NodeRole,
        client: httpx.AsyncClient,
        *,
        started_at: datetime | None = None,
    ) -> None:
        super().__init__(
            interval=settings.register_interval_seconds, jitter=0.1, max_backoff=settings.register_interval_seconds
        )
        self.settings = settings
        self.role: NodeRole = role
        self.client = client
        self.started_at = started_at or utcnow()
        self.registered = False
        self.last_registered_at: float | None = None
        self._token = settings.fleet_token()

    def registration(self) -> Registration:
        """The payload sent to master."""
        return Registration(
            hostname=self.settings.hostname,
            role=self.role,
            base_url=self.settings.base_url(),
            software_version=software_version(),
            started_at=self.started_at,
        )

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """POST the registration once; raises Unavailable (counted and backed off by the worker)."""
        url = f"{self.settings.master_url}{REGISTER_PATH}"
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = self.registration().model_dump_json(by_alias=True)
        try:
            response = await self.client.post(
                url, content=body, headers=headers, timeout=self.settings.http_timeout_seconds
            )
        except httpx.HTTPError as exc:
            self.registered = False
            raise Unavailable(f"master unreachable at {url}: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            self.registered = False
            raise Unavailable(f"master refused registration: HTTP {response.status_code}")
        if not self.registered:
            logger.info("registered with master", extra={"master": self.settings.master_url, "role": self.role})
        self.registered = True
        self.last_registered_at = time.time()
