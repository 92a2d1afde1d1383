"""master's auth dependencies: the read and admin roles of the tokens file, and the fleet token.

- ``Reader``: any token of the tokens file (``read`` or ``admin``) — cluster, nodes, models, audit, state.
- ``Admin``: an ``admin`` token — every mutation; the token's name is the audit log's actor.
- ``FleetMember``: the fleet token — registration.

Missing or unknown token: 401; a ``read`` token on an admin route: 403. Without a tokens file (or fleet
token) the corresponding check is off: master then refuses to start unless it listens on loopback only or
``FLEET_AUTH=disabled`` (services/common/auth.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Principal, TokenBook, tokens_match
from services.common.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

ANONYMOUS = Principal(name="anonymous", role="admin")

bearer = HTTPBearer(auto_error=False, description="a token of the tokens file, or the fleet token (registration)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass(frozen=True)
class Access:
    """What master checks callers against (None = that check is off)."""

    tokens: TokenBook | None
    fleet_token: str | None

    @classmethod
    def load(cls, tokens_file: Path | None, fleet_token: str | None) -> Access:
        if tokens_file is None:
            logger.warning("FLEET_ADMIN_TOKENS_FILE not set: master's API accepts any caller")
            return cls(tokens=None, fleet_token=fleet_token)
        tokens = TokenBook.load(tokens_file)
        logger.info("tokens file loaded", extra={"roles": tokens.roles()})
        return cls(tokens=tokens, fleet_token=fleet_token)


def get_access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


AccessDep = Annotated[Access, Depends(get_access)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise Unauthorized("missing bearer token", hint="send 'Authorization: Bearer <token>'")
    return credentials.credentials.strip()


async def reader(credentials: Credentials, access: AccessDep) -> Principal:
    """A ``read`` or ``admin`` token (401 when missing or unknown)."""
    if access.tokens is None:
        return ANONYMOUS
    principal = access.tokens.match(_token(credentials))
    if principal is None:
        raise Unauthorized("token not accepted")
    return principal


async def admin(principal: Annotated[Principal, Depends(reader)]) -> Principal:
    """An ``admin`` token (401 when missing or unknown, 403 for a ``read`` token)."""
    if not principal.may("admin"):
        raise Forbidden(f"token {principal.name!r} has the read role; this needs admin")
    return principal


async def fleet_member(credentials: Credentials, access: AccessDep) -> None:
    """The fleet token (registration)."""
    if access.fleet_token is None:
        return
    if not tokens_match(_token(credentials), access.fleet_token):
        raise Unauthorized("fleet token not accepted")


Reader = Annotated[Principal, Depends(reader)]
Admin = Annotated[Principal, Depends(admin)]
