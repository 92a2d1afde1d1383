"""``/v1/cluster``: the cluster view (read) and fleet-wide operations (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.master.auth import Admin, Reader
from services.master.cluster import ClusterView
from services.master.fanout import OperationResult
from services.master.routes.common import FleetDep

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])


@router.get("", response_model=ClusterView)
async def cluster(fleet: FleetDep, _: Reader, refresh: Annotated[bool, Query()] = False) -> Response:
    """Latest poll results with their age, and master's state-document alarm; ``refresh=true`` polls
    every node now."""
    view = await fleet.refreshed_view() if refresh else fleet.view()
    # Serialised directly: re-validating a 200-node view on the way out costs more than building it.
    return Response(view.model_dump_json(), media_type="application/json")


@router.post("/sync", tags=["operations"])
async def cluster_sync(fleet: FleetDep, _: Admin) -> OperationResult:
    """Trigger every node's sync concurrently; per-node results within one node timeout."""
    return await fleet.cluster_operation("sync")


@router.post("/gc", tags=["operations"])
async def cluster_gc(fleet: FleetDep, _: Admin) -> OperationResult:
    """Trigger every node's GC concurrently."""
    return await fleet.cluster_operation("gc")
