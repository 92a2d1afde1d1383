"""problem+json responses (RFC 9457) for every service's FastAPI app."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import BucketError, FleetError, Unavailable

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://modelfleet.dev/problems/"


def problem_response(
    *, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """Build one problem+json response."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _fleet_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetError)
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable | BucketError):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.detail)
    return problem_response(
        status=exc.status_code, slug=exc.slug, title=exc.title, detail=exc.detail, headers=headers, **exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    return problem_response(
        status=422, slug="invalid-input", title="Invalid input", detail="request failed validation", errors=errors
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        status=exc.status_code,
        slug=f"http-{exc.status_code}",
        title=str(exc.detail),
        detail=str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(status=500, slug="internal-error", title="Internal error", detail="internal error")


def install_problem_handlers(app: FastAPI) -> None:
    """Map the error tree, validation errors and anything unexpected to problem+json (no tracebacks)."""
    app.add_exception_handler(FleetError, _fleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
