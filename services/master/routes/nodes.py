"""``/v1/nodes``: registration (fleet token), the registered nodes (read), per-node operations (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.contracts import Registration
from services.master.auth import Admin, Reader, fleet_member
from services.master.cluster import NodeView
from services.master.fanout import OperationResult
from services.master.routes.common import FleetDep, Hostname

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


class Registered(BaseModel):
    hostname: str
    role: str
    stale_after_seconds: float
    heartbeat_interval_hint_seconds: float


class NodeList(BaseModel):
    nodes: list[NodeView]


@router.post("/register", dependencies=[Depends(fleet_member)])
async def register(body: Registration, fleet: FleetDep) -> Registered:
    """Upsert a sidecar (keyed by hostname + role); repeated as the heartbeat. Its base URL must fit
    ``FLEET_SIDECAR_ADDRESSES`` (403 otherwise): master never calls an arbitrary URL."""
    record = await fleet.register(body)
    return Registered(
        hostname=record.hostname,
        role=record.role,
        stale_after_seconds=fleet.settings.node_stale_seconds,
        heartbeat_interval_hint_seconds=fleet.settings.register_interval_seconds,
    )


@router.get("")
async def list_nodes(fleet: FleetDep, _: Reader) -> NodeList:
    """Registered nodes with their sidecars' debounced health (models: see /v1/cluster)."""
    view = fleet.view()
    return NodeList(nodes=[n.model_copy(update={"models": {}}) for n in view.nodes])


@router.get("/{hostname}")
async def get_node(hostname: Hostname, fleet: FleetDep, _: Reader) -> NodeView:
    """One node, merged per model."""
    if hostname == "register":
        raise StarletteHTTPException(405)  # /v1/nodes/register takes POST only
    return fleet.node(hostname)


@router.post("/{hostname}/sync", tags=["operations"])
async def node_sync(hostname: Hostname, fleet: FleetDep, _: Admin) -> OperationResult:
    """Trigger the node's puller and config_manager now (503 + Retry-After when it is unhealthy)."""
    return await fleet.node_operation("sync", hostname)


@router.post("/{hostname}/gc", tags=["operations"])
async def node_gc(hostname: Hostname, fleet: FleetDep, _: Admin) -> OperationResult:
    """Trigger the node's config_manager GC now."""
    return await fleet.node_operation("gc", hostname)
