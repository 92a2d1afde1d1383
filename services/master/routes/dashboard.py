"""The operators' web page: ``/`` redirects to ``/ui/``, which serves ``static/index.html`` and its two files.

The page and its files carry no data and need no token: the script reads everything from the JSON API
with the token in an ``Authorization`` header (docs/master.md, "Dashboard"). Every answer here carries a
strict Content-Security-Policy (no inline script, no other origin, Trusted Types so no HTML string ever
reaches the DOM, no framing) and ``nosniff``; the API routes keep their own headers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

router = APIRouter(include_in_schema=False, tags=["dashboard"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: The only files served (no directory listing, no path from the request reaches the file system).
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/ui/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise StarletteHTTPException(404, detail=f"no dashboard file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)
