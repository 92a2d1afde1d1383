"""The puller's FastAPI app: a lifespan owning the GCS client, the download engine and the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI
from google.auth.credentials import Credentials
from google.cloud import storage

from services.common.credentials import READ_ONLY_SCOPE, TokenSource, load_credentials
from services.common.gcs import client_with, close_client, emulator_endpoint, make_client
from services.common.health import node_health
from services.common.http import make_async_client
from services.common.network import BucketNetwork
from services.common.problems import install_problem_handlers
from services.common.registration import Registrar
from services.common.settings import prepare_state_dir
from services.remote_model_puller.api import make_router
from services.remote_model_puller.download import Downloader, EngineOptions
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.runtime import Runtime
from services.remote_model_puller.sdkreader import SdkRangeReader
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.sync import SyncWorker

if TYPE_CHECKING:
    from services.remote_model_puller.events import EventSubscriber


def media_tokens(settings: Settings, credentials: Credentials | None) -> TokenSource | None:
    """Bearer tokens for the native media client from ``credentials`` (None: anonymous)."""
    if credentials is None:
        return None
    return TokenSource(
        credentials,
        network=BucketNetwork.from_settings(settings),
        margin_seconds=settings.gcs_token_refresh_margin_seconds,
    )


def make_downloader(settings: Settings, auth: TokenSource | None, client: storage.Client | None = None) -> Downloader:
    """The download engine: the native media client, or google-cloud-storage's downloads through
    ``client`` with ``FLEET_DOWNLOAD_ENGINE=sdk`` (same verification and durability)."""
    options = EngineOptions(
        workers=settings.download_workers,
        range_bytes=settings.download_range_bytes,
        buffer_bytes=settings.download_buffer_bytes,
        timeout_seconds=settings.gcs_timeout_seconds,
        attempts=settings.download_attempts,
        retry_deadline_seconds=settings.download_retry_deadline_seconds,
        direct_io=settings.download_direct_io,
    )
    endpoint = emulator_endpoint(settings) or settings.gcs_endpoint
    reader = None
    if settings.download_engine == "sdk":
        reader = SdkRangeReader(
            client=client if client is not None else make_client(settings),
            bucket=settings.bucket_name,
            timeout=settings.gcs_timeout_seconds,
            buffer_bytes=settings.download_buffer_bytes,
        )
    network = BucketNetwork.from_settings(settings)
    return Downloader(
        endpoint=endpoint, bucket=settings.bucket_name, options=options, auth=auth, network=network, reader=reader
    )


def make_events(settings: Settings, worker: SyncWorker, metrics: PullerMetrics) -> EventSubscriber | None:
    """The bucket-notification subscriber when events are configured, else None (polling)."""
    if not settings.events_enabled:
        metrics.set_mode("polling")
        return None
    # Imported only here: google-cloud-pubsub (gRPC streaming, OpenTelemetry) costs a polling-only
    # puller ~13 MB of RSS for nothing.
    from services.remote_model_puller.events import PUBSUB_SCOPE, EventSubscriber, make_subscriber_client

    client = make_subscriber_client(settings, load_credentials(settings, scopes=[PUBSUB_SCOPE]))
    return EventSubscriber(settings, worker=worker, metrics=metrics, client=client)


def create_app(
    settings: Settings,
    *,
    gcs_client: storage.Client | None = None,
    http_client: httpx.AsyncClient | None = None,
    start_workers: bool = True,
) -> FastAPI:
    """Build the app; tests inject clients and may drive the sync worker by hand (``start_workers=False``)."""
    metrics = PullerMetrics()
    store = LocalStore(settings.local_model_directory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # One credentials object for the listing client and the media client (one token, refreshed once).
            credentials = load_credentials(settings, scopes=[READ_ONLY_SCOPE])
            client = gcs_client
            if client is None:
                client = client_with(settings, credentials)
                stack.callback(close_client, client)
            auth = media_tokens(settings, credentials) if settings.download_engine == "native" else None
            downloader = make_downloader(settings, auth, client)
            stack.callback(downloader.close)
            http = http_client
            if http is None:
                http = await stack.enter_async_context(make_async_client(timeout=settings.http_timeout_seconds))
            worker = SyncWorker(settings, client=client, downloader=downloader, store=store, metrics=metrics)
            registrar = Registrar(settings, "puller", http)
            prepare_state_dir(settings.state_dir)
            events = make_events(settings, worker, metrics)
            loops = {"sync": worker, "registration": registrar} | ({"events": events} if events else {})
            health = node_health(settings, loops)
            app.state.runtime = Runtime(
                worker=worker, store=store, metrics=metrics, health=health, registrar=registrar, events=events
            )
            if start_workers:
                worker.start()
                stack.push_async_callback(worker.stop)
                if events is not None:
                    events.start()
                    stack.push_async_callback(events.stop)
                registrar.start()
                stack.push_async_callback(registrar.stop)
            yield

    app = FastAPI(title="modelfleet remote_model_puller", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(make_router(settings.fleet_token(), settings.token_book()))
    return app
