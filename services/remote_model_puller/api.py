"""HTTP routes of the puller: health, readiness, status, sync trigger, metrics. No logic here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.auth import TokenBook
from services.common.contracts import validate_model_name
from services.common.errors import Unavailable
from services.common.health import health_response
from services.common.http import require_reader, require_token
from services.remote_model_puller.runtime import Runtime
from services.remote_model_puller.status import build_status


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def make_router(token: str | None, readers: TokenBook | None = None) -> APIRouter:
    """The puller's routes; ``POST /v1/sync`` requires the fleet token, ``GET /v1/status`` the fleet token
    or a token of the tokens file (when configured); ``/healthz``, ``/readyz`` and ``/metrics`` stay open."""
    router = APIRouter()
    fleet_token = [Depends(require_token(token))]
    reader = [Depends(require_reader(token, readers))]

    @router.get("/healthz")
    async def healthz(runtime: RuntimeDep) -> JSONResponse:
        """Alive and making progress: sync and registration loops, state dir writable (never the bucket)."""
        return health_response(await runtime.health.run())

    @router.get("/readyz")
    async def readyz(runtime: RuntimeDep) -> dict[str, Any]:
        ready, why = runtime.readiness()
        if not ready:
            raise Unavailable(why, retry_after=2)
        return {"status": "ready"}

    @router.get("/v1/status", dependencies=reader)
    async def status(runtime: RuntimeDep) -> JSONResponse:
        ready, _ = runtime.readiness()
        payload = build_status(runtime.worker, ready=ready, registrar=runtime.registrar, events=runtime.events)
        return JSONResponse(payload.model_dump(mode="json", by_alias=True))

    @router.post("/v1/sync", status_code=202, dependencies=fleet_token)
    async def sync(
        runtime: RuntimeDep, model: Annotated[str | None, Query(description="sync only this model")] = None
    ) -> dict[str, Any]:
        if model is not None:
            validate_model_name(model)
        runtime.worker.trigger(model)
        return {"accepted": True, "model": model}

    @router.get("/metrics")
    async def metrics(runtime: RuntimeDep) -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
