"""master's OpenAPI document: every error documented as problem+json (the bearer security of each route
comes from its auth dependency, services/master/auth.py).

FastAPI documents only 422 (as application/json); master answers every error as
``application/problem+json`` (services.common.problems), so the schema is post-processed to say so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}

ERROR_TEXT = {
    "400": "Malformed request body (not JSON)",
    "401": "No bearer token, or one not accepted",
    "403": "The token's role may not do this (read token on an admin route), or a sidecar URL not allowed",
    "404": "Not found",
    "409": "Conflict",
    "412": "If-Match does not match the desired-state generation (someone else changed it)",
    "413": "Request body too large",
    "428": "If-Match missing: a write must name the generation it was based on (the ETag of a GET)",
    "422": "Invalid input (model name, label, policy, or version not complete in the bucket)",
    "502": "A node refused the operation",
    "503": "Temporarily unavailable (node unhealthy now, bucket unreachable); see Retry-After",
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def install_openapi(app: FastAPI, *, errors: dict[str, list[str]]) -> None:
    """Replace ``app.openapi``: ``errors`` maps "METHOD path" → error statuses."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for schema_name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(schema_name, None)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                key = f"{method.upper()} {path}"
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status in errors.get(key, []):
                    responses[status] = _problem(ERROR_TEXT[status])
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
