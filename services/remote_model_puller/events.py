"""The puller's bucket-notification subscriber: streaming pull on a subscription of its own.

Opt-in: with ``FLEET_EVENTS_PROJECT`` and ``FLEET_EVENTS_TOPIC`` set, the puller keeps a subscription
of its own (``FLEET_EVENTS_SUBSCRIPTION``, default ``modelfleet-puller-<HOSTNAME>``, created on the
topic if absent) and streams its messages into the :class:`~.coalesce.EventCoalescer`.

Modes (status ``details.events.mode``, metric ``modelfleet_puller_sync_mode``):

- ``events``: the stream runs; the sync worker lists everything only every
  ``FLEET_FULL_RECONCILE_SECONDS`` (600 s), and otherwise only what events name.
- ``fallback``: the subscription cannot be reached (or its stream ended); the worker polls at
  ``FLEET_SYNC_INTERVAL_SECONDS`` as without events. Entering either mode runs a full pass at once, so
  nothing published while the stream was down is missed.

A check every ``FLEET_EVENTS_CHECK_SECONDS`` gets the subscription (the streaming pull itself retries a
dead server forever, silently), restarts an ended stream, and runs a full pass when an event has waited
longer than ``FLEET_EVENTS_MAX_LAG_SECONDS`` (the puller fell behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import grpc
from google.api_core import exceptions as gexc
from google.auth.credentials import Credentials
from google.cloud import pubsub_v1
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from services.common.worker import PeriodicWorker
from services.remote_model_puller.coalesce import EventCoalescer
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.sync import SyncWorker

logger = logging.getLogger(__name__)

PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
ACK_DEADLINE_SECONDS = 60
#: Unacked messages leased at once: a burst beyond waits in Pub/Sub until passes cover the first ones.
MAX_OUTSTANDING_MESSAGES = 2000

Mode = Literal["events", "fallback"]


def make_subscriber_client(settings: Settings, credentials: Credentials | None) -> pubsub_v1.SubscriberClient:
    """A subscriber client: plaintext gRPC to ``PUBSUB_EMULATOR_HOST``, else Pub/Sub with ``credentials``
    (None: google-auth's default credentials)."""
    if settings.pubsub_emulator_host:
        channel = grpc.insecure_channel(settings.pubsub_emulator_host)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    if credentials is not None:
        return pubsub_v1.SubscriberClient(credentials=credentials)
    return pubsub_v1.SubscriberClient()


class EventSubscriber(PeriodicWorker):
    """Keeps the streaming pull running; switches the sync worker between events and fallback."""

    name = "events"

    def __init__(
        self,
        settings: Settings,
        *,
        worker: SyncWorker,
        metrics: PullerMetrics,
        client: pubsub_v1.SubscriberClient,
    ) -> None:
        super().__init__(interval=settings.events_check_seconds, jitter=0.1, max_backoff=settings.events_check_seconds)
        assert settings.events_project is not None and settings.events_topic is not None
        self.settings = settings
        self.worker = worker
        self.metrics = metrics
        self.client = client
        self.topic = f"projects/{settings.events_project}/topics/{settings.events_topic}"
        self.subscription = f"projects/{settings.events_project}/subscriptions/{settings.subscription_id()}"
        self.coalescer = EventCoalescer(settings, worker=worker, metrics=metrics)
        self.mode: Mode = "fallback"
        self.error: str | None = "not connected yet"
        self.behind = 0
        self._stream: Any = None  # StreamingPullFuture (untyped library)
        metrics.set_mode(self.mode)

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        if self._stream is not None and self._stream.done():
            await self._enter_fallback(f"the streaming pull ended: {self._stream_error()}")
        try:
            await asyncio.to_thread(self._ensure_subscription)
        except (gexc.GoogleAPIError, grpc.RpcError) as exc:
            await self._enter_fallback(f"subscription {self.subscription} unreachable: {type(exc).__name__}: {exc}")
            return
        if self._stream is None:
            self._start_stream(asyncio.get_running_loop())
            self._enter_events()
        oldest = self.coalescer.oldest_waiting_seconds()
        # A failing sync loop retries (full passes) on its own backoff: do not hurry it.
        if oldest > self.settings.events_max_lag_seconds and self.worker.consecutive_failures == 0:
            self.behind += 1
            logger.warning("events fell behind (oldest waiting %.0fs): full reconcile", oldest)
            self.worker.trigger(None)

    async def stop(self, grace: float = 10.0) -> None:
        await super().stop(grace)
        self.coalescer.close()
        await asyncio.to_thread(self._stop_stream)
        await asyncio.to_thread(self.client.close)

    def _ensure_subscription(self) -> None:
        timeout = self.settings.http_timeout_seconds
        try:
            self.client.get_subscription(request={"subscription": self.subscription}, retry=None, timeout=timeout)
        except gexc.NotFound:
            request = {"name": self.subscription, "topic": self.topic, "ack_deadline_seconds": ACK_DEADLINE_SECONDS}
            with contextlib.suppress(gexc.AlreadyExists):  # another check won the race
                self.client.create_subscription(request=request, retry=None, timeout=timeout)
            logger.info("created subscription %s on %s", self.subscription, self.topic)

    def _start_stream(self, loop: asyncio.AbstractEventLoop) -> None:
        receive = self.coalescer.receive

        def on_message(message: Any) -> None:  # a library thread
            attributes = dict(message.attributes)
            with contextlib.suppress(RuntimeError):  # the loop is closing: the message is redelivered
                loop.call_soon_threadsafe(receive, attributes, message.ack, message.publish_time)

        flow = pubsub_v1.types.FlowControl(max_messages=MAX_OUTSTANDING_MESSAGES)
        self._stream = self.client.subscribe(self.subscription, callback=on_message, flow_control=flow)

    def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(Exception):
                stream.result(timeout=self.settings.http_timeout_seconds)

    def _stream_error(self) -> str:
        with contextlib.suppress(Exception):
            exc = self._stream.exception(timeout=0)
            return f"{type(exc).__name__}: {exc}" if exc is not None else "cancelled"
        return "unknown"

    def _enter_events(self) -> None:
        every = self.settings.full_reconcile_seconds
        logger.info("sync mode: events (subscription %s); full reconcile every %.0fs", self.subscription, every)
        self.mode, self.error = "events", None
        self.metrics.set_mode("events")
        self.worker.interval = self.settings.full_reconcile_seconds
        self.worker.trigger(None)  # what changed before the stream started

    async def _enter_fallback(self, why: str) -> None:
        if self.mode == "events" or self.error != why:
            logger.warning("sync mode: fallback (polling every %.0fs): %s", self.settings.sync_interval_seconds, why)
        self.error = why
        if self._stream is not None:
            await asyncio.to_thread(self._stop_stream)
            self.coalescer.forget()
        if self.mode == "events":
            self.mode = "fallback"
            self.metrics.set_mode("fallback")
            self.worker.interval = self.settings.sync_interval_seconds
            self.worker.trigger(None)
