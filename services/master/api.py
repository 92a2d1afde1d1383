"""master's HTTP API, assembled: the per-resource routers of ``services.master.routes`` and the error
statuses each route documents (problem+json, mirrored in the OpenAPI document)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.master.routes import audit, cluster, dashboard, golden, models, nodes, rollouts, state, whoami

ROUTERS: tuple[APIRouter, ...] = (
    nodes.router,
    cluster.router,
    models.router,
    audit.router,
    state.router,
    golden.router,
    whoami.router,
    dashboard.router,
    rollouts.router,
    rollouts.default_router,
)

READ = ["401"]
WRITE = ["401", "403", "428"]
ROUTE_ERRORS: dict[str, list[str]] = {
    "POST /v1/nodes/register": ["400", "401", "403", "413", "422"],
    "GET /v1/nodes": READ,
    "GET /v1/nodes/{hostname}": [*READ, "404", "422"],
    "POST /v1/nodes/{hostname}/sync": ["401", "403", "404", "422", "502", "503"],
    "POST /v1/nodes/{hostname}/gc": ["401", "403", "404", "422", "502", "503"],
    "GET /v1/cluster": [*READ, "422"],
    "POST /v1/cluster/sync": ["401", "403"],
    "POST /v1/cluster/gc": ["401", "403"],
    "GET /v1/models": [*READ, "503"],
    "GET /v1/models/{model}": [*READ, "404", "422", "503"],
    "PUT /v1/models/{model}": ["400", *WRITE, "404", "409", "412", "413", "422", "503"],
    "PUT /v1/models/{model}/labels/{label}": ["400", *WRITE, "404", "409", "412", "413", "422", "503"],
    "DELETE /v1/models/{model}/labels/{label}": [*WRITE, "404", "409", "412", "422", "503"],
    "POST /v1/models/{model}/rollback": [*WRITE, "404", "409", "412", "422", "503"],
    "GET /v1/audit": [*READ, "422", "503"],
    "GET /v1/state": [*READ, "503"],
    "POST /v1/state/restore": [*WRITE, "409", "412", "503"],
    "POST /v1/state/accept": [*WRITE, "409", "412", "503"],
    "GET /v1/golden": [*READ, "503"],
    "GET /v1/golden/{model}": [*READ, "404", "422", "503"],
    "PUT /v1/golden/{model}": ["400", *WRITE, "412", "413", "422", "503"],
    "DELETE /v1/golden/{model}": [*WRITE, "404", "412", "422", "503"],
    "POST /v1/golden/{model}/test": ["401", "403", "404", "422", "503"],
    "GET /v1/whoami": READ,
    "GET /v1/rollouts": [*READ, "503"],
    "GET /v1/rollouts/{model}": [*READ, "404", "422", "503"],
    "POST /v1/rollouts/{model}/{command}": [*WRITE, "404", "409", "412", "422", "503"],
    "GET /v1/rollout-policy": [*READ, "503"],
    "PUT /v1/rollout-policy": ["400", *WRITE, "409", "412", "413", "422", "503"],
}


def include_routes(app: FastAPI) -> None:
    """Mount every router (the models router's catch-all stays last within its prefix); their routes are
    kept in ``app.state.api_routes`` for the 405 answers' Allow header."""
    app.state.api_routes = [route for router in ROUTERS for route in router.routes]
    for router in ROUTERS:
        app.include_router(router)
