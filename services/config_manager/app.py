"""The config_manager FastAPI app: a lifespan owning the tfserving client and the workers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.common.health import node_health
from services.common.http import make_async_client, require_reader, require_token
from services.common.problems import install_problem_handlers
from services.common.registration import Registrar, software_version
from services.common.settings import prepare_state_dir
from services.common.tfs import TFServingClient
from services.config_manager import SERVICE_NAME
from services.config_manager.api import protected_router, router
from services.config_manager.live import GRPC_OPTIONS, LiveView
from services.config_manager.localdisk import free_bytes
from services.config_manager.metrics import Metrics
from services.config_manager.reconciler import Reconciler
from services.config_manager.settings import Settings
from services.config_manager.traffic import TrafficReader
from services.config_manager.watcher import VolumeWatcher

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    client: TFServingClient | None = None,
    free_space: Callable[[Path], int] = free_bytes,
    start_workers: bool = True,
    http_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    """Build the app. Tests inject ``free_space`` (a fake disk reading) or a client, or run passes by hand."""
    metrics = Metrics()
    tfs_client = client or TFServingClient(settings.tensorflow_serving_grpc_target, options=GRPC_OPTIONS)
    live = LiveView(
        tfs_client, status_timeout=settings.status_timeout_seconds, reload_timeout=settings.reload_timeout_seconds
    )
    reconciler = Reconciler(settings, live, metrics, free_space=free_space)
    watcher = VolumeWatcher(settings.local_model_directory, reconciler, interval=settings.watch_interval_seconds or 1)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                stack.push_async_callback(tfs_client.close)
            reconciler.prepare()
            prepare_state_dir(settings.state_dir)
            registrar: Registrar | None = None
            if settings.tensorflow_serving_metrics_url:
                scraper = await stack.enter_async_context(make_async_client(timeout=settings.metrics_timeout_seconds))
                app.state.traffic = TrafficReader(
                    scraper, settings.tensorflow_serving_metrics_url, timeout=settings.metrics_timeout_seconds
                )
            if start_workers:
                reconciler.start()
                stack.push_async_callback(reconciler.stop)
                if settings.watch_interval_seconds > 0:
                    watcher.start()
                    stack.push_async_callback(watcher.stop)
                http = http_client
                if http is None:
                    http = await stack.enter_async_context(make_async_client(timeout=settings.http_timeout_seconds))
                registrar = Registrar(settings, "config_manager", http)
                app.state.registrar = registrar
                registrar.start()
                stack.push_async_callback(registrar.stop)
            app.state.health = node_health(
                settings, {"reconcile": reconciler, "watch": watcher, "registration": registrar}
            )
            logger.info(
                "config_manager started",
                extra={"config_file": str(settings.tensorflow_serving_config_file), "tfserving": tfs_client.target},
            )
            yield

    app = FastAPI(title="modelfleet config_manager", version=software_version(), lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.reconciler = reconciler
    app.state.registrar = None
    app.state.traffic = None
    install_problem_handlers(app)
    app.include_router(router)
    fleet_token = settings.fleet_token()
    app.include_router(protected_router(require_token(fleet_token), require_reader(fleet_token, settings.token_book())))
    return app


__all__ = ["SERVICE_NAME", "create_app"]
