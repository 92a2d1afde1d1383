"""master's HTTP API: thin routers over :class:`services.master.fleet.Fleet`.

Reads (GET) are open on the internal network, except ``/v1/audit`` (who changed what is for admins);
every mutation needs an admin token (``FLEET_ADMIN_TOKENS_FILE``), registration needs the fleet token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from services.common.contracts import AuditEntry, ModelPolicy, Registration, validate_model_name
from services.common.errors import InvalidInput, NotFound, PreconditionFailed
from services.master.cluster import ClusterView, NodeView
from services.master.desired import ChangeResult, ModelInfo
from services.master.fanout import OperationResult
from services.master.fleet import Fleet
from services.master.policy_ops import rollback, set_label, set_policy, unset_label

Hostname = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")]

# "METHOD path" → error statuses documented (problem+json); mirrored in the OpenAPI document.
ROUTE_ERRORS: dict[str, list[str]] = {
    "POST /v1/nodes/register": ["400", "401", "403", "413", "422"],
    "GET /v1/nodes/{hostname}": ["404", "422"],
    "POST /v1/nodes/{hostname}/sync": ["401", "403", "404", "422", "502", "503"],
    "POST /v1/nodes/{hostname}/gc": ["401", "403", "404", "422", "502", "503"],
    "GET /v1/cluster": ["422"],
    "POST /v1/cluster/sync": ["401", "403"],
    "POST /v1/cluster/gc": ["401", "403"],
    "GET /v1/models": ["503"],
    "GET /v1/models/{model}": ["404", "422", "503"],
    "PUT /v1/models/{model}": ["400", "401", "403", "404", "412", "413", "422", "503"],
    "PUT /v1/models/{model}/labels/{label}": ["400", "401", "403", "404", "412", "413", "422", "503"],
    "DELETE /v1/models/{model}/labels/{label}": ["401", "403", "404", "412", "422", "503"],
    "POST /v1/models/{model}/rollback": ["401", "403", "404", "409", "412", "422", "503"],
    "GET /v1/audit": ["401", "403", "422", "503"],
}
SECURED = {key for key, statuses in ROUTE_ERRORS.items() if "401" in statuses}


class Registered(BaseModel):
    hostname: str
    role: str
    stale_after_seconds: float
    heartbeat_interval_hint_seconds: float


class NodeList(BaseModel):
    nodes: list[NodeView]


class ModelList(BaseModel):
    generation: int = Field(description="desired-state document generation (0 = no document)")
    models: list[ModelInfo]


class LabelTarget(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    version: int = Field(ge=0, le=2**63 - 1)


class PolicyBody(ModelPolicy):
    """A model's overrides as PUT takes them: unknown fields (typos) and non-integer versions refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


class AuditList(BaseModel):
    entries: list[AuditEntry]


def get_fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]


async def admin_actor(request: Request) -> str:
    """The admin token's name (401 without a token, 403 with a wrong one); set up by create_app."""
    actor: str = await request.app.state.authorize_admin(request)
    return actor


async def fleet_token(request: Request) -> None:
    """The fleet token check (registration)."""
    await request.app.state.authorize_fleet(request)


Actor = Annotated[str, Depends(admin_actor)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


def model_name(model: Annotated[str, Path(examples=["ranker"])]) -> str:
    """Path parameter check: 422 for traversal and odd characters."""
    return validate_model_name(model)


ModelName = Annotated[str, Depends(model_name)]
LabelName = Annotated[str, Path(max_length=64, examples=["stable"])]


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: "<generation>"`` → int; ``*`` or absent → None; anything else can never match (412)."""
    if value is None or value.strip() in ("", "*"):
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionFailed(f"If-Match {value!r} is not a generation this API issued")
    return int(tag)


def etag(generation: int) -> str:
    return f'"{generation}"'


def make_router() -> APIRouter:  # noqa: C901 - one route each
    """All of master's routes (auth checks come from ``app.state``, set by create_app)."""
    router = APIRouter(prefix="/v1")

    @router.post("/nodes/register", dependencies=[Depends(fleet_token)], tags=["nodes"])
    async def register(body: Registration, fleet: FleetDep) -> Registered:
        """Upsert a sidecar (keyed by hostname + role); repeated as the heartbeat."""
        record = await fleet.register(body)
        return Registered(
            hostname=record.hostname,
            role=record.role,
            stale_after_seconds=fleet.settings.node_stale_seconds,
            heartbeat_interval_hint_seconds=fleet.settings.register_interval_seconds,
        )

    @router.get("/nodes", tags=["nodes"])
    async def list_nodes(fleet: FleetDep) -> NodeList:
        """Registered nodes with their sidecars' debounced health (models: see /v1/cluster)."""
        view = fleet.view()
        return NodeList(nodes=[n.model_copy(update={"models": {}}) for n in view.nodes])

    @router.get("/nodes/{hostname}", tags=["nodes"])
    async def get_node(hostname: Hostname, fleet: FleetDep) -> NodeView:
        """One node, merged per model."""
        if hostname == "register":
            raise StarletteHTTPException(405)  # /v1/nodes/register takes POST only
        return fleet.node(hostname)

    @router.post("/nodes/{hostname}/sync", tags=["operations"])
    async def node_sync(hostname: Hostname, fleet: FleetDep, actor: Actor) -> OperationResult:
        """Trigger the node's puller and config_manager now (503 + Retry-After when it is unhealthy)."""
        return await fleet.node_operation("sync", hostname)

    @router.post("/nodes/{hostname}/gc", tags=["operations"])
    async def node_gc(hostname: Hostname, fleet: FleetDep, actor: Actor) -> OperationResult:
        """Trigger the node's config_manager GC now."""
        return await fleet.node_operation("gc", hostname)

    @router.get("/cluster", tags=["cluster"], response_model=ClusterView)
    async def cluster(fleet: FleetDep, refresh: Annotated[bool, Query()] = False) -> Response:
        """Latest poll results with their age; ``refresh=true`` polls every node now."""
        view = await fleet.refreshed_view() if refresh else fleet.view()
        # Serialised directly: re-validating a 200-node view on the way out costs more than building it.
        return Response(view.model_dump_json(), media_type="application/json")

    @router.post("/cluster/sync", tags=["operations"])
    async def cluster_sync(fleet: FleetDep, actor: Actor) -> OperationResult:
        """Trigger every node's sync concurrently; per-node results within one node timeout."""
        return await fleet.cluster_operation("sync")

    @router.post("/cluster/gc", tags=["operations"])
    async def cluster_gc(fleet: FleetDep, actor: Actor) -> OperationResult:
        """Trigger every node's GC concurrently."""
        return await fleet.cluster_operation("gc")

    @router.get("/models", tags=["models"])
    async def list_models(fleet: FleetDep, response: Response) -> ModelList:
        """Bucket models with their complete versions and effective policy."""
        models, generation = await fleet.store.list_models()
        response.headers["ETag"] = etag(generation)
        return ModelList(generation=generation, models=models)

    @router.put("/models/{model}/labels/{label}", tags=["models"])
    async def put_label(
        model: ModelName,
        label: LabelName,
        body: LabelTarget,
        fleet: FleetDep,
        actor: Actor,
        response: Response,
        if_match: IfMatch = None,
    ) -> ChangeResult:
        """Point a label at a complete version (loaded first, then moved, by config_manager)."""
        result = await set_label(
            fleet.store, model, label, body.version, actor=actor, if_match=parse_if_match(if_match)
        )
        response.headers["ETag"] = etag(result.generation)
        return result

    @router.delete("/models/{model}/labels/{label}", tags=["models"])
    async def delete_label(
        model: ModelName, label: LabelName, fleet: FleetDep, actor: Actor, response: Response, if_match: IfMatch = None
    ) -> ChangeResult:
        """Remove a label."""
        result = await unset_label(fleet.store, model, label, actor=actor, if_match=parse_if_match(if_match))
        response.headers["ETag"] = etag(result.generation)
        return result

    @router.post("/models/{model}/rollback", tags=["models"])
    async def rollback_model(
        model: ModelName, fleet: FleetDep, actor: Actor, response: Response, if_match: IfMatch = None
    ) -> ChangeResult:
        """Pin the versions served before the last change that altered serving (see docs/master.md)."""
        result = await rollback(fleet.store, model, actor=actor, if_match=parse_if_match(if_match))
        response.headers["ETag"] = etag(result.generation)
        return result

    # Generic model routes last: {model} lets traversal attempts reach validation (422).
    @router.get("/models/{model}", tags=["models"])
    async def get_model(model: ModelName, fleet: FleetDep, response: Response) -> ModelInfo:
        """One model; the ETag is the desired-state generation to send back as If-Match."""
        info, generation = await fleet.store.get_model(model)
        response.headers["ETag"] = etag(generation)
        return info

    @router.put("/models/{model}", tags=["models"])
    async def put_model(
        model: ModelName, body: PolicyBody, fleet: FleetDep, actor: Actor, response: Response, if_match: IfMatch = None
    ) -> ChangeResult:
        """Replace the model's overrides (pinned/latest, labels, keep, enabled). Default policy = removed."""
        policy = ModelPolicy.model_validate(body.model_dump())
        result = await set_policy(fleet.store, model, policy, actor=actor, if_match=parse_if_match(if_match))
        response.headers["ETag"] = etag(result.generation)
        return result

    @router.get("/audit", tags=["audit"])
    async def audit(
        fleet: FleetDep,
        actor: Actor,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        model: Annotated[str | None, Query(max_length=128)] = None,
    ) -> AuditList:
        """Newest audit entries first (admin only)."""
        if model is not None:
            validate_model_name(model)
        entries = await fleet.store.audit(limit=min(limit, fleet.settings.audit_read_limit), model=model)
        return AuditList(entries=entries)

    @router.api_route("/models/{rest:path}", methods=FALLBACK_METHODS, include_in_schema=False, name=FALLBACK)
    async def models_fallback(rest: str, request: Request) -> None:
        """Paths under /v1/models that no route takes: traversal and odd names → 422, else 405/404."""
        allowed = allowed_methods(request)
        if allowed:
            raise StarletteHTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        validate_model_name(rest.split("/", 1)[0])
        if any(part in ("", ".", "..") for part in rest.split("/")):
            raise InvalidInput(f"invalid path below /v1/models: {rest!r}")
        raise NotFound(f"no resource at /v1/models/{rest}")

    return router


FALLBACK = "models-fallback"
FALLBACK_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]


def allowed_methods(request: Request) -> set[str]:
    """Methods of the real routes matching this path (the fallback route excluded); a literal path
    (``/v1/nodes/register``) wins over a template that also matches it (``/v1/nodes/{hostname}``)."""
    literal: set[str] = set()
    templated: set[str] = set()
    for route in request.app.state.api_router.routes:
        if isinstance(route, BaseRoute) and getattr(route, "name", None) != FALLBACK:
            match, _ = route.matches({**request.scope, "method": "GET"})
            methods = getattr(route, "methods", None) or set()
            if match != Match.NONE and methods:
                (templated if "{" in getattr(route, "path", "") else literal).update(methods)
    return literal or templated
