"""``/v1/models``: bucket models and their desired state (read); changes need admin and If-Match.

A write without If-Match is 428 (fleetctl always sends the ETag it read); a stale one is 412. A model
gone from the bucket that nodes still serve stays reachable here, so it can be retired.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.contracts import ModelPolicy, validate_model_name
from services.common.errors import InvalidInput, NotFound
from services.master.auth import Admin, Reader
from services.master.desired import ChangeResult, ModelInfo
from services.master.policy_ops import rollback, set_label, set_policy, unset_label
from services.master.routes.common import FALLBACK, FleetDep, IfMatch, LabelName, ModelName, allowed_methods, etag

router = APIRouter(prefix="/v1/models", tags=["models"])

FALLBACK_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]


class ModelList(BaseModel):
    generation: int = Field(description="desired-state document generation (0 = no document)")
    models: list[ModelInfo]


class LabelTarget(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    version: int = Field(ge=0, le=2**63 - 1)


class PolicyBody(ModelPolicy):
    """A model's overrides as PUT takes them: unknown fields (typos) and non-integer versions refused."""

    model_config = ConfigDict(strict=True, extra="forbid")


@router.get("")
async def list_models(fleet: FleetDep, _: Reader, response: Response) -> ModelList:
    """Bucket models (and models nodes still serve) with their complete versions and effective policy."""
    models, generation = await fleet.store.list_models(served=fleet.served_models())
    response.headers["ETag"] = etag(generation)
    return ModelList(generation=generation, models=models)


@router.put("/{model}/labels/{label}", response_model=ChangeResult)
async def put_label(
    model: ModelName, label: LabelName, body: LabelTarget, fleet: FleetDep, actor: Admin, if_match: IfMatch
) -> Response:
    """Point a label at a complete version (loaded first, then moved, by config_manager)."""
    result = await set_label(fleet.store, model, label, body.version, actor=actor.name, if_match=if_match)
    return _changed(result)


@router.delete("/{model}/labels/{label}", response_model=ChangeResult)
async def delete_label(
    model: ModelName, label: LabelName, fleet: FleetDep, actor: Admin, if_match: IfMatch
) -> Response:
    """Remove a label."""
    result = await unset_label(fleet.store, model, label, actor=actor.name, if_match=if_match)
    return _changed(result)


@router.post("/{model}/rollback", response_model=ChangeResult)
async def rollback_model(model: ModelName, fleet: FleetDep, actor: Admin, if_match: IfMatch) -> Response:
    """Pin the versions served before the last change that altered serving (see docs/master.md)."""
    return _changed(await rollback(fleet.store, model, actor=actor.name, if_match=if_match))


# Generic model routes last: {model} lets traversal attempts reach validation (422).
@router.get("/{model}")
async def get_model(model: ModelName, fleet: FleetDep, _: Reader, response: Response) -> ModelInfo:
    """One model; the ETag is the desired-state generation to send back as If-Match."""
    info, generation = await fleet.store.get_model(model, served=fleet.served_models())
    response.headers["ETag"] = etag(generation)
    return info


@router.put("/{model}", response_model=ChangeResult)
async def put_model(model: ModelName, body: PolicyBody, fleet: FleetDep, actor: Admin, if_match: IfMatch) -> Response:
    """Replace the model's overrides (pinned/latest, labels, keep, enabled, rollout). Default policy =
    removed. ``enabled: false`` retires the model, also one gone from the bucket that nodes still serve.
    Fields master writes (rollout_state, nodes, bad_versions) are kept unless the body names them."""
    policy = ModelPolicy.model_validate(body.model_dump())
    served = fleet.served_models()
    given = body.model_fields_set
    result = await set_policy(
        fleet.store, model, policy, actor=actor.name, if_match=if_match, served=served, given=given
    )
    return _changed(result)


@router.api_route("/{rest:path}", methods=FALLBACK_METHODS, include_in_schema=False, name=FALLBACK)
async def models_fallback(rest: str, request: Request) -> None:
    """Paths under /v1/models that no route takes: traversal and odd names → 422, else 405/404."""
    allowed = allowed_methods(request)
    if allowed:
        raise StarletteHTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
    validate_model_name(rest.split("/", 1)[0])
    if any(part in ("", ".", "..") for part in rest.split("/")):
        raise InvalidInput(f"invalid path below /v1/models: {rest!r}")
    raise NotFound(f"no resource at /v1/models/{rest}")


def _changed(result: ChangeResult) -> Response:
    """The change as JSON with its new generation as ETag."""
    return Response(result.model_dump_json(), media_type="application/json", headers={"ETag": etag(result.generation)})
