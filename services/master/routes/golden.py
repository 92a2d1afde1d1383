"""``/v1/golden``: golden requests per model (read), uploads and removals (admin, If-Match), and a test run
of the bucket's set on the nodes (admin: it sends Predicts to production servers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import ConfigDict

from services.common.contracts.golden import GoldenSet
from services.common.errors import NotFound
from services.master.auth import Admin, Reader
from services.master.golden_ops import (
    GoldenChange,
    GoldenList,
    GoldenTestResult,
    delete_golden,
    list_golden,
    put_golden,
    read_golden,
    test_golden,
)
from services.master.routes.common import FleetDep, IfMatch, ModelName, etag

router = APIRouter(prefix="/v1/golden", tags=["golden"])


class GoldenBody(GoldenSet):
    """A golden set as PUT takes it: unknown fields (typos in checks) refused."""

    model_config = ConfigDict(extra="forbid")


@router.get("")
async def list_sets(fleet: FleetDep, _: Reader) -> GoldenList:
    """Every model's golden set: request count, digest, who wrote it when."""
    return await list_golden(fleet.store)


@router.get("/{model}")
async def get_set(model: ModelName, fleet: FleetDep, _: Reader, response: Response) -> GoldenSet:
    """One model's set; the ETag is its generation, to send back as If-Match."""
    golden, generation = await read_golden(fleet.store, model)
    response.headers["ETag"] = etag(generation)
    return golden


@router.put("/{model}")
async def put_set(
    model: ModelName, body: GoldenBody, fleet: FleetDep, actor: Admin, if_match: IfMatch, response: Response
) -> GoldenChange:
    """Upload or replace the set (If-Match ``"0"`` = create only). Every request must fit a signature of the
    version the model serves now; 422 names each one that does not."""
    golden = GoldenSet.model_validate(body.model_dump())
    change = await put_golden(fleet.store, model, golden, actor=actor.name, if_match=if_match)
    response.headers["ETag"] = etag(change.generation)
    return change


@router.delete("/{model}")
async def delete_set(model: ModelName, fleet: FleetDep, actor: Admin, if_match: IfMatch) -> GoldenChange:
    """Remove the set: the model's new versions then take traffic without a check, as before."""
    return await delete_golden(fleet.store, model, actor=actor.name, if_match=if_match)


@router.post("/{model}/test")
async def test_set(
    model: ModelName,
    fleet: FleetDep,
    _: Admin,
    node: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9._-]+$")] = None,
) -> GoldenTestResult:
    """Run the bucket's set on every node (or ``node``) against the version each serves now; changes nothing."""
    records = fleet.registry.for_host(node) if node else fleet.registry.sidecars()
    if node and not records:
        raise NotFound(f"node {node!r} is not registered", hostname=node)
    return await test_golden(
        fleet.store, model, records, fleet.client, deadline=fleet.settings.golden_test_timeout_seconds
    )
