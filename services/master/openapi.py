"""master's OpenAPI document: every error documented as problem+json, bearer security declared.

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
    "401": "No bearer token",
    "403": "Token not accepted",
    "404": "Not found",
    "409": "Conflict",
    "412": "If-Match does not match the desired-state generation (someone else changed it)",
    "413": "Request body too large",
    "422": "Invalid input (model name, label, policy, or version not complete in the bucket)",
    "502": "A node refused the operation",
    "503": "Temporarily unavailable (node unhealthy now, bucket unreachable); see Retry-After",
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def install_openapi(app: FastAPI, *, errors: dict[str, list[str]], secured: set[str]) -> None:
    """Replace ``app.openapi``: ``errors`` maps "METHOD path" → error statuses; ``secured`` lists the
    "METHOD path" keys that need a bearer token."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        for schema_name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(schema_name, None)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                key = f"{method.upper()} {path}"
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status in errors.get(key, []):
                    responses[status] = _problem(ERROR_TEXT[status])
                if key in secured:
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
