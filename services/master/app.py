"""master's FastAPI app: create_app(settings) + a lifespan owning the clients and the poller."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.cloud import storage
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common import gcs
from services.common.credentials import READ_WRITE_SCOPE
from services.common.health import Check, Health, HealthBounds, WritableDir, health_response
from services.common.problems import install_problem_handlers, problem_response
from services.master.api import ROUTE_ERRORS, include_routes
from services.master.auth import Access
from services.master.desired import DesiredStore
from services.master.fleet import Fleet
from services.master.limits import BodySizeLimit
from services.master.metrics import FleetCollector, MasterMetrics
from services.master.openapi import install_openapi
from services.master.poller import Poller
from services.master.registry import Registry, SidecarRecord
from services.master.rollout_driver import RolloutDriver
from services.master.routes.common import allowed_methods
from services.master.settings import Settings
from services.master.state_guard import StateGuard
from services.master.state_ops import StateWatch
from services.master.wire import SidecarClient

logger = logging.getLogger(__name__)

SOFTWARE_VERSION = "0.1.0"


def create_app(
    settings: Settings,
    *,
    gcs_client: storage.Client | None = None,
    run_poller: bool = True,
) -> FastAPI:
    """Build master. ``gcs_client`` is injectable for tests; ``run_poller=False``
    leaves polling to explicit calls (``fleet.poller.run_now()``), for deterministic tests."""
    fleet_token = settings.fleet_token()
    access = Access.load(settings.admin_tokens_file, fleet_token)
    registry = Registry(
        settings.registry_path(), stale_after=settings.node_stale_seconds, drop_after=settings.node_drop_seconds
    )
    metrics_registry = CollectorRegistry()
    metrics = MasterMetrics(metrics_registry)

    def on_poll(record: SidecarRecord, ok: bool, seconds: float) -> None:
        metrics.polls.labels(result="ok" if ok else "failed").inc()
        metrics.poll_duration.observe(seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            registry.load()
            client = SidecarClient(token=fleet_token, limit=settings.poll_concurrency)
            stack.push_async_callback(client.close)
            bucket_client = gcs_client
            if bucket_client is None:
                bucket_client = gcs.make_client(settings, scopes=[READ_WRITE_SCOPE])
                stack.callback(gcs.close_client, bucket_client)
            poller = Poller(
                registry,
                client,
                interval=settings.poll_interval_seconds,
                node_timeout=settings.node_timeout_seconds,
                concurrency=settings.poll_concurrency,
                on_result=on_poll,
            )
            guard = StateGuard(settings.state_dir)
            guard.load()
            store = DesiredStore(bucket_client, settings, guard)
            stack.push_async_callback(store.aclose)
            fleet = Fleet(
                settings=settings,
                registry=registry,
                poller=poller,
                store=store,
                client=client,
                metrics=metrics,
            )
            app.state.fleet = fleet
            registry.drop_where(lambda r: fleet.addresses.refusal(r.hostname, r.base_url))
            state_watch = StateWatch(store, interval=settings.poll_interval_seconds)
            rollouts = RolloutDriver(fleet, interval=settings.poll_interval_seconds)
            app.state.rollouts = rollouts
            app.state.health = master_health(settings, poller, registry, rollouts)
            collector = FleetCollector(fleet.view)
            metrics_registry.register(collector)
            stack.callback(metrics_registry.unregister, collector)
            stack.push_async_callback(registry.save)
            stack.push_async_callback(poller.close)
            if run_poller:
                poller.start()
                stack.push_async_callback(poller.stop)
                state_watch.start()
                stack.push_async_callback(state_watch.stop)
                rollouts.start()
                stack.push_async_callback(rollouts.stop)
            logger.info(
                "master listening",
                extra={"port": settings.port, "bucket": settings.remote_model_directory},
            )
            yield

    app = FastAPI(
        title="modelfleet master",
        version=SOFTWARE_VERSION,
        description="Node registry, cluster view, desired state and audit of a TF Serving fleet.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, larger={"/v1/golden/": settings.golden_max_body_bytes}
    )
    app.state.access = access
    include_routes(app)
    started = time.time()

    @app.get(
        "/healthz",
        tags=["meta"],
        response_class=JSONResponse,
        responses={503: {"description": "unhealthy: problem+json naming the failed checks"}},
    )
    async def healthz(request: Request) -> JSONResponse:
        """Alive and making progress: the poller finishes rounds and the registry can be persisted.
        Never depends on nodes or the bucket (a round whose polls all fail still counts)."""
        health: Health = request.app.state.health
        return health_response(await health.run(), extra={"uptime_seconds": round(time.time() - started, 1)})

    @app.get("/metrics", tags=["meta"], response_class=Response)
    async def metrics_endpoint() -> Response:
        """Prometheus exposition: master's metrics plus per-node gauges from the latest poll."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app, errors=ROUTE_ERRORS)
    app.add_exception_handler(405, method_not_allowed)
    return app


def master_health(settings: Settings, poller: Poller, registry: Registry, rollouts: RolloutDriver) -> Health:
    """master's checks: the poller and the rollout driver finish rounds; the registry can be persisted
    (state dir writable, last save good)."""
    health = Health(HealthBounds.from_settings(settings))
    health.add_worker("poller", poller)
    health.add_worker("rollout", rollouts)
    state_dir = WritableDir(settings.state_dir, cache_seconds=settings.health_probe_cache_seconds)

    async def registry_persistence() -> Check:
        if registry.save_error is not None:
            return Check(False, f"last registry save failed: {registry.save_error}")
        writable = await state_dir.check()
        return Check(writable.ok, f"{registry.path}: last save ok; {writable.detail}")

    health.add("registry", registry_persistence)
    return health


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 whose Allow header lists every method of the path (Starlette names only the first route's)."""
    allow = ", ".join(sorted(allowed_methods(request)))
    if not allow and isinstance(exc, StarletteHTTPException):
        allow = (exc.headers or {}).get("Allow", "")
    return problem_response(
        status=405,
        slug="http-405",
        title="Method Not Allowed",
        detail=f"{request.method} is not allowed here (allowed: {allow})",
        headers={"Allow": allow},
    )
