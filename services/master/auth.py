"""Admin tokens (``FLEET_ADMIN_TOKENS_FILE``: ``name:token`` lines) and the dependencies enforcing them.

The name of the matching token is the actor recorded in the audit log. 401 without a bearer token,
403 with one that matches nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request

from services.common.errors import Forbidden
from services.common.http import bearer_token, tokens_match

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


def parse_admin_tokens(text: str) -> dict[str, str]:
    """``name:token`` per line (blank lines and ``#`` comments ignored) → {token: name}."""
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError(f"admin tokens file line {number}: expected 'name:token'")
        if token in tokens:
            raise ValueError(f"admin tokens file line {number}: token reused (names must be distinguishable)")
        tokens[token] = name
    if not tokens:
        raise ValueError("admin tokens file has no tokens")
    return tokens


def load_admin_tokens(path: Path | None) -> dict[str, str] | None:
    """Read the admin tokens file; None when no file is configured (admin API open: local fleet only)."""
    if path is None:
        logger.warning("FLEET_ADMIN_TOKENS_FILE not set: the admin API accepts any caller")
        return None
    return parse_admin_tokens(path.read_text(encoding="utf-8"))


def match_admin(tokens: dict[str, str], given: str) -> str | None:
    """The name of the token ``given`` matches (constant-time per comparison), or None."""
    found: str | None = None
    for token, name in tokens.items():
        if tokens_match(given, token):
            found = name
    return found


def require_admin(tokens: dict[str, str] | None) -> Callable[[Request], Coroutine[Any, Any, str]]:
    """A FastAPI dependency returning the actor name of the admin token (401 missing, 403 wrong)."""

    async def dependency(request: Request) -> str:
        if tokens is None:
            return ANONYMOUS
        name = match_admin(tokens, bearer_token(request))
        if name is None:
            raise Forbidden("admin token not accepted")
        return name

    return dependency
