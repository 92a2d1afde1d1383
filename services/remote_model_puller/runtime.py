"""The objects one running puller is made of, shared by the lifespan and the routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.common.health import Health
from services.common.registration import Registrar
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.sync import SyncWorker

if TYPE_CHECKING:  # google-cloud-pubsub is imported only when events are configured
    from services.remote_model_puller.events import EventSubscriber


@dataclass
class Runtime:
    worker: SyncWorker
    store: LocalStore
    metrics: PullerMetrics
    health: Health
    registrar: Registrar | None = None
    events: EventSubscriber | None = None

    def readiness(self) -> tuple[bool, str]:
        """Ready = the model volume is writable and at least one sync pass has finished (even a failed
        one: a bucket outage is reported in status, restarting the puller would not fix it)."""
        if not self.store.writable():
            return False, f"{self.store.fleet} is not writable"
        if self.worker.runs == 0:
            return False, "first sync pass not finished yet"
        return True, "ready"
