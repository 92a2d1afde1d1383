"""The puller's FastAPI app: a lifespan owning the GCS client, the download engine and the workers."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from google.cloud import storage

from services.common.gcs import close_client, make_client
from services.common.health import node_health
from services.common.http import make_async_client
from services.common.problems import install_problem_handlers
from services.common.registration import Registrar
from services.common.settings import prepare_state_dir
from services.remote_model_puller.api import make_router
from services.remote_model_puller.download import Downloader, EngineOptions, HeaderSource
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.runtime import Runtime
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.sync import SyncWorker

READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"


def gcs_auth_headers(settings: Settings) -> HeaderSource | None:
    """Authorization headers for raw media reads: none for the emulator, else google-auth credentials
    (GOOGLE_APPLICATION_CREDENTIALS / $CLOUDSDK_CONFIG ADC file / ambient ADC), refreshed when expired."""
    if settings.storage_emulator_host:
        return None
    import google.auth
    from google.auth.transport.requests import Request

    creds_file = settings.credentials_file()
    if creds_file is not None:
        credentials, _ = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
            str(creds_file), scopes=[READ_ONLY_SCOPE]
        )
    else:
        credentials, _ = google.auth.default(scopes=[READ_ONLY_SCOPE])
    lock = threading.Lock()
    request = Request()

    def headers() -> dict[str, str]:
        with lock:
            if not credentials.valid:
                credentials.refresh(request)
            return {"Authorization": f"Bearer {credentials.token}"}

    return headers


def make_downloader(settings: Settings, headers: HeaderSource | None) -> Downloader:
    endpoint = settings.gcs_endpoint
    if settings.storage_emulator_host:
        endpoint = settings.storage_emulator_host
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "http://" + endpoint
    options = EngineOptions(
        workers=settings.download_workers,
        range_bytes=settings.download_range_bytes,
        buffer_bytes=settings.download_buffer_bytes,
        timeout_seconds=settings.gcs_timeout_seconds,
        attempts=settings.download_attempts,
        direct_io=settings.download_direct_io,
    )
    return Downloader(endpoint=endpoint, bucket=settings.bucket_name, options=options, headers=headers)


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
            client = gcs_client
            if client is None:
                client = make_client(settings)
                stack.callback(close_client, client)
            downloader = make_downloader(settings, gcs_auth_headers(settings))
            stack.callback(downloader.close)
            http = http_client
            if http is None:
                http = await stack.enter_async_context(make_async_client(timeout=settings.http_timeout_seconds))
            worker = SyncWorker(settings, client=client, downloader=downloader, store=store, metrics=metrics)
            registrar = Registrar(settings, "puller", http)
            prepare_state_dir(settings.state_dir)
            health = node_health(settings, {"sync": worker, "registration": registrar})
            app.state.runtime = Runtime(worker=worker, store=store, metrics=metrics, health=health, registrar=registrar)
            if start_workers:
                worker.start()
                stack.push_async_callback(worker.stop)
                registrar.start()
                stack.push_async_callback(registrar.stop)
            yield

    app = FastAPI(title="modelfleet remote_model_puller", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(make_router(settings.fleet_token(), settings.token_book()))
    return app
