"""Bucket events → sync work: one targeted pass per burst, acks only once a pass covered the event.

An event is *covered* by a successful sync pass whose listing of the event's target began after the
event arrived (GCS notifies after the change, so that listing saw it, or saw it already replaced), or
whose listing reflects it (the new generation listed, the removed one not: :meth:`BucketEvent.reflected_in`).
So:

- an event the last successful pass already reflects (a duplicate, a late or reordered delivery) is
  acked at once and costs nothing;
- any other event waits, and its target (a model, or the desired state) is triggered; the sync worker
  folds every trigger that arrives before its next pass into that one pass (an event arriving during a
  pass is left to the end of that pass: its listing may already cover it);
- after each successful pass, waiting events it covers are acked; the rest trigger again (they arrived
  after the listing). A failed pass acks nothing.

1,000 notifications for one version therefore cost one pass (or two when the listing raced the upload).
A lost message is harmless: the full reconcile lists everything on a long interval.

The quiet period is re-checked by a timer: after each pass, a version still inside its quiet period gets
a one-shot trigger of its model at the moment the period ends (no polling in between).

Everything here runs on the event loop; the subscriber hands messages over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.notifications import BucketEvent, NotANotification, target_of
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.sync import SyncWorker

logger = logging.getLogger(__name__)

#: A quiet-period timer fires this long after the period ends (clock granularity, listing timestamps).
TIMER_SLACK_SECONDS = 0.05


@dataclass
class WaitingEvent:
    event: BucketEvent
    target: str
    ack: Callable[[], None]
    published_at: datetime
    received_at: float  # monotonic


class EventCoalescer:
    """Turns notifications into triggers of the sync worker and acks them when a pass covered them."""

    def __init__(self, settings: Settings, *, worker: SyncWorker, metrics: PullerMetrics) -> None:
        self.settings = settings
        self.worker = worker
        self.metrics = metrics
        self.waiting: list[WaitingEvent] = []
        self.handled: dict[str, int] = {"synced": 0, "covered": 0, "ignored": 0}
        self.last_lag_seconds: float | None = None
        self._covered: Mapping[str, int] | None = None  # the listing of the last successful pass
        self._timers: dict[str, asyncio.TimerHandle] = {}
        worker.on_synced = self.synced

    def receive(self, attributes: Mapping[str, str], ack: Callable[[], None], published_at: datetime) -> None:
        """One delivered message (on the loop thread)."""
        try:
            event = BucketEvent.from_attributes(attributes)
        except NotANotification as exc:
            logger.warning("ignored a message that is not a bucket notification: %s", exc)
            self._done(ack, "ignored", published_at)
            return
        target = target_of(event, bucket=self.settings.bucket_name, prefix=self.settings.prefix)
        if target is None:
            logger.debug("ignored an event outside the models", extra={"object": event.name})
            self._done(ack, "ignored", published_at)
            return
        if self._covered is not None and event.reflected_in(self._covered):
            self._done(ack, "covered", published_at)
            return
        self.waiting.append(WaitingEvent(event, target, ack, published_at, time.monotonic()))
        self.metrics.events_waiting.set(len(self.waiting))
        if not self.worker.running:  # during a pass, synced() decides: its listing may cover the event
            self.worker.trigger(target)

    def synced(self) -> None:
        """After a successful pass: ack what its listing covers, trigger again for the rest, set timers."""
        listing = self.worker.listing
        self._covered = listing.generations
        listed_at = listing.started_at if listing.started_at is not None else float("-inf")
        still: list[WaitingEvent] = []
        for waiting in self.waiting:
            listed_after = waiting.received_at < listed_at and (
                listing.scope is None or waiting.target in listing.scope
            )
            if listed_after or waiting.event.reflected_in(self._covered):
                self._done(waiting.ack, "synced", waiting.published_at)
            else:
                still.append(waiting)
        self.waiting = still
        self.metrics.events_waiting.set(len(still))
        for target in sorted({w.target for w in still}):
            self.worker.trigger(target)
        self._set_quiet_timers()

    def oldest_waiting_seconds(self) -> float:
        """Age of the oldest event not yet covered by a pass (0 when none waits)."""
        if not self.waiting:
            return 0.0
        return time.monotonic() - min(w.received_at for w in self.waiting)

    def forget(self) -> None:
        """The stream was restarted: its ack ids are void, and the full pass that follows covers all."""
        self.waiting.clear()
        self.metrics.events_waiting.set(0)

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _done(self, ack: Callable[[], None], outcome: str, published_at: datetime) -> None:
        ack()
        self.handled[outcome] += 1
        self.metrics.events.labels(outcome=outcome).inc()
        if outcome != "ignored":
            self.last_lag_seconds = max(0.0, (datetime.now(UTC) - published_at).total_seconds())
            self.metrics.event_lag.observe(self.last_lag_seconds)

    def _set_quiet_timers(self) -> None:
        state = self.worker.state
        if state.scan is None or self.settings.complete_marker is not None or self.settings.quiet_period_seconds <= 0:
            return
        quiet = timedelta(seconds=self.settings.quiet_period_seconds)
        now = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        for name, model in state.scan.models.items():
            ends = [
                max(o.updated for o in version.objects) + quiet
                for version in model.versions.values()
                if not version.complete and version.objects
            ]
            # Inside its quiet period when the pass applied the rule (the period may have ended since,
            # while the pass downloaded: then the timer fires at once).
            pending = [end for end in ends if end > state.scanned_at]
            if not pending or (name in self._timers and not self._timers[name].cancelled()):
                continue
            delay = max(0.0, (min(pending) - now).total_seconds()) + TIMER_SLACK_SECONDS
            self._timers[name] = loop.call_later(delay, self._quiet_period_over, name)

    def _quiet_period_over(self, model: str) -> None:
        self._timers.pop(model, None)
        logger.debug("quiet period over: re-checking", extra={"model": model})
        self.worker.trigger(model)
