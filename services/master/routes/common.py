"""What the routers share: the Fleet dependency, path parameters, ETag and If-Match handling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request
from starlette.routing import BaseRoute, Match

from services.common.contracts import validate_model_name
from services.common.errors import PreconditionRequired
from services.master.fleet import Fleet


def get_fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


FleetDep = Annotated[Fleet, Depends(get_fleet)]
Hostname = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")]
LabelName = Annotated[str, Path(max_length=64, examples=["stable"])]


def model_name(model: Annotated[str, Path(examples=["ranker"])]) -> str:
    """Path parameter check: 422 for traversal and odd characters."""
    return validate_model_name(model)


ModelName = Annotated[str, Depends(model_name)]


NEVER_MATCHES = -1  # generations are positive


def if_match_generation(
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='the ETag read before ("<generation>"); "*" = whatever the generation (on purpose)',
        ),
    ] = None,
) -> int | None:
    """``If-Match: "<generation>"`` → int; ``*`` → None (explicitly any); absent → 428; anything else can
    never match: -1, refused with 412 by the write once the body has been validated."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired(
            "send If-Match with the ETag of a GET (or '*' to overwrite whatever is there)",
            hint="GET the resource, then send its ETag back as If-Match",
        )
    if if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    return int(tag) if tag.isdigit() else NEVER_MATCHES


IfMatch = Annotated[int | None, Depends(if_match_generation)]


def etag(generation: int) -> str:
    return f'"{generation}"'


FALLBACK = "models-fallback"


def allowed_methods(request: Request) -> set[str]:
    """Methods of the real routes matching this path (the fallback route excluded); a literal path
    (``/v1/nodes/register``) wins over a template that also matches it (``/v1/nodes/{hostname}``)."""
    literal: set[str] = set()
    templated: set[str] = set()
    for route in request.app.state.api_routes:
        if isinstance(route, BaseRoute) and getattr(route, "name", None) != FALLBACK:
            match, _ = route.matches({**request.scope, "method": "GET"})
            methods = getattr(route, "methods", None) or set()
            if match != Match.NONE and methods:
                (templated if "{" in getattr(route, "path", "") else literal).update(methods)
    return literal or templated
