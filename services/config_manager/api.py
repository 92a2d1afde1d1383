"""HTTP API of config_manager: thin routes over the reconciler and its snapshot."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.common.contracts.golden import GoldenSet
from services.common.errors import NotFound, TFServingError, Unavailable
from services.common.health import Health, health_response
from services.config_manager.configfile import config_hash
from services.config_manager.reconciler import Reconciler
from services.config_manager.status import build_status, is_ready
from services.config_manager.traffic import TrafficReader

router = APIRouter()


def get_reconciler(request: Request) -> Reconciler:
    reconciler: Reconciler = request.app.state.reconciler
    return reconciler


ReconcilerDep = Annotated[Reconciler, Depends(get_reconciler)]


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Alive and making progress: reconcile, watch and registration loops, state dir writable.
    Never depends on tfserving: a pass that fails because tfserving is down still counts."""
    health: Health = request.app.state.health
    return health_response(await health.run())


@router.get("/readyz")
async def readyz(reconciler: ReconcilerDep) -> dict[str, Any]:
    """Ready once tfserving answers and the config has been applied; 503 otherwise."""
    if not is_ready(reconciler):
        raise Unavailable("tfserving not reachable or models.config not applied yet", retry_after=3)
    return {"status": "ready", "config_hash": reconciler.snapshot.config_hash}


def protected_router(token_dependency: Any, read_dependency: Any) -> APIRouter:
    """``POST /v1/sync`` and ``POST /v1/gc`` behind the fleet token; ``GET /v1/status`` and ``GET /v1/config``
    behind the fleet token or a token of the tokens file (``/healthz``, ``/readyz``, ``/metrics`` stay open)."""
    protected = APIRouter()
    writes = [Depends(token_dependency)]

    @protected.get("/v1/status", dependencies=[Depends(read_dependency)])
    async def status(request: Request, reconciler: ReconcilerDep) -> JSONResponse:
        """Per model: serve/keep, on disk, in config, live states, labels, failed and held versions."""
        settings = request.app.state.settings
        payload = build_status(reconciler, hostname=settings.hostname, software_version=request.app.version)
        reader: TrafficReader | None = request.app.state.traffic
        traffic = await reader.read() if reader is not None else None
        for model, counters in (traffic or {}).items():
            if model in payload.models:
                payload.models[model].traffic = counters
        registrar = request.app.state.registrar
        payload.details["registered"] = registrar.registered if registrar is not None else None
        payload.details["registration_error"] = registrar.last_error if registrar is not None else None
        return JSONResponse(payload.model_dump(mode="json"))

    @protected.get("/v1/config", dependencies=[Depends(read_dependency)])
    async def config(reconciler: ReconcilerDep) -> dict[str, Any]:
        """The models.config text config_manager last wrote, with its hash."""
        snap = reconciler.snapshot
        if not snap.config_text and reconciler.config_file.exists():
            text = reconciler.config_file.read_text(encoding="utf-8")
            return {"path": str(reconciler.config_file), "text": text, "hash": config_hash(text), "applied": False}
        return {
            "path": str(reconciler.config_file),
            "text": snap.config_text,
            "hash": snap.config_hash,
            "applied": snap.config_applied,
        }

    @protected.post("/v1/sync", status_code=202, dependencies=writes)
    async def sync(reconciler: ReconcilerDep, model: str | None = None) -> dict[str, Any]:
        """Start a reconcile pass now; returns at once (status shows progress)."""
        reconciler.trigger(model)
        return {"accepted": True, "syncing": reconciler.running}

    @protected.post("/v1/gc", status_code=202, dependencies=writes)
    async def gc(reconciler: ReconcilerDep) -> dict[str, Any]:
        """Start a pass that ends with GC; returns at once with the last GC report."""
        reconciler.trigger()
        report = reconciler.snapshot.gc
        return {
            "accepted": True,
            "last_removed": [f"{c.model}/{c.version}" for c in report.removed],
            "low_disk": report.low_disk,
            "free_bytes": report.free_bytes,
        }

    @protected.post("/v1/golden/test")
    async def golden_test(body: GoldenTestRequest, reconciler: ReconcilerDep) -> dict[str, Any]:
        """Run a golden set (the body's, else the node's copy) against a loaded version of a model now
        (the version that serves unversioned calls unless ``version`` is given). Changes nothing."""
        return await run_golden_test(reconciler, body)

    return protected


class GoldenTestRequest(BaseModel):
    model: str
    version: int | None = None
    golden: GoldenSet | None = None


async def run_golden_test(reconciler: Reconciler, body: GoldenTestRequest) -> dict[str, Any]:
    golden = body.golden or reconciler.gate.view.sets.get(body.model)
    if golden is None:
        raise NotFound(f"no golden set for model {body.model!r} on this node", model=body.model)
    serving = reconciler.serving_version(body.model)
    version = body.version if body.version is not None else serving
    if version is None:
        raise NotFound(f"model {body.model!r} serves no version on this node", model=body.model)
    try:
        verdicts = await reconciler.gate.run_set(golden, body.model, version, model=body.model, serving=serving)
    except TFServingError as exc:
        raise Unavailable(f"tfserving did not answer: {exc.detail}", retry_after=3) from exc
    return {
        "model": body.model,
        "version": version,
        "serving": serving,
        "golden_digest": golden.digest(),
        "passed": all(v.passed for v in verdicts),
        "verdicts": [
            {"request": v.request, "passed": v.passed, "failures": list(v.failures), "answer": v.answer}
            for v in verdicts
        ],
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this app."""
    return PlainTextResponse(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
