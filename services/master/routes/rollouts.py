"""``/v1/rollouts``: every model's rollout (read) and the operator's commands on one (admin, If-Match)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts import RolloutPolicy
from services.master.auth import Admin, Reader
from services.master.desired import ChangeResult
from services.master.rollout_driver import RolloutDriver
from services.master.rollout_ops import (
    FleetRolloutPolicy,
    RolloutList,
    RolloutView,
    fleet_default,
    get_rollout,
    list_rollouts,
    rollout_command,
    set_fleet_default,
)
from services.master.routes.common import FleetDep, IfMatch, ModelName, etag

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])
default_router = APIRouter(prefix="/v1/rollout-policy", tags=["rollouts"])


class RolloutPolicyBody(RolloutPolicy):
    """The fleet default as PUT takes it: unknown fields (typos) refused."""

    model_config = ConfigDict(extra="forbid")


class FleetDefaultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rollout: RolloutPolicyBody | None = Field(description="null removes the fleet default")


@default_router.get("")
async def get_fleet_default(fleet: FleetDep, _: Reader, response: Response) -> FleetRolloutPolicy:
    """The fleet's default rollout policy (applies to every model without its own ``rollout``)."""
    result = await fleet_default(fleet.store)
    response.headers["ETag"] = etag(result.generation)
    return result


@default_router.put("")
async def put_fleet_default(
    body: FleetDefaultBody, fleet: FleetDep, actor: Admin, if_match: IfMatch, response: Response
) -> FleetRolloutPolicy:
    """Set (or remove, ``{"rollout": null}``) the fleet's default rollout policy; audited as ``_rollout``."""
    rollout = RolloutPolicy.model_validate(body.rollout.model_dump()) if body.rollout is not None else None
    result = await set_fleet_default(fleet.store, rollout, actor=actor.name, if_match=if_match)
    response.headers["ETag"] = etag(result.generation)
    return result


def get_driver(request: Request) -> RolloutDriver:
    driver: RolloutDriver = request.app.state.rollouts
    return driver


DriverDep = Annotated[RolloutDriver, Depends(get_driver)]
Command = Literal["pause", "resume", "abort", "promote"]


@router.get("")
async def rollouts(driver: DriverDep, _: Reader, response: Response) -> RolloutList:
    """Every model's last rollout: state, waves, bake left, what it waits for, why it reverted."""
    result = await list_rollouts(driver)
    response.headers["ETag"] = etag(result.generation)
    return result


@router.get("/{model}")
async def rollout(model: ModelName, driver: DriverDep, _: Reader, response: Response) -> RolloutView:
    """One model's rollout; the ETag is the state-document generation to send back as If-Match."""
    view, generation = await get_rollout(driver, model)
    response.headers["ETag"] = etag(generation)
    return view


@router.post("/{model}/{command}", response_model=ChangeResult)
async def command(model: ModelName, command: Command, driver: DriverDep, actor: Admin, if_match: IfMatch) -> Response:
    """pause (freeze where it is), resume (a paused wave re-bakes; an aborted rollout restarts at wave 1),
    abort (every node back to the previous versions, the version not marked bad), promote (skip the
    current wave's remaining bake)."""
    result = await rollout_command(driver, model, command, actor=actor.name, if_match=if_match)
    return Response(result.model_dump_json(), media_type="application/json", headers={"ETag": etag(result.generation)})
