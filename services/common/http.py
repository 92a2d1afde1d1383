"""HTTP clients with explicit timeouts, and the fleet-token dependency for sidecar APIs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from fastapi import Request

from services.common.auth import TokenBook, tokens_match
from services.common.errors import Unauthorized

__all__ = ["bearer_token", "make_async_client", "require_reader", "require_token", "tokens_match"]


def make_async_client(
    *,
    timeout: float,
    base_url: str = "",
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """An AsyncClient whose every call has a deadline (connect, read, write, pool all bounded)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        headers=headers,
        transport=transport,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
        trust_env=False,
    )


def bearer_token(request: Request) -> str:
    """The bearer token of a request, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing bearer token", hint="send 'Authorization: Bearer <token>'")
    return value.strip()


def require_reader(fleet_token: str | None, tokens: TokenBook | None) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A sidecar's read routes: the fleet token (master's polls) or any token of the tokens file (a
    ``read`` or ``admin`` one); 401 otherwise. No check when neither is configured."""

    async def dependency(request: Request) -> None:
        if fleet_token is None and tokens is None:
            return
        given = bearer_token(request)
        fleet_ok = fleet_token is not None and tokens_match(given, fleet_token)
        if not fleet_ok and (tokens is None or tokens.match(given) is None):
            raise Unauthorized("token not accepted")

    return dependency


def require_token(expected: str | None) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency enforcing one token (no check when ``expected`` is None): 401 when the
    bearer token is missing or is not that token."""

    async def dependency(request: Request) -> None:
        if expected is None:
            return
        if not tokens_match(bearer_token(request), expected):
            raise Unauthorized("token not accepted")

    return dependency
