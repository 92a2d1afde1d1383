"""``/v1/whoami``: the caller's token name and role, so a client (the dashboard) shows only what it may do."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from services.common.auth import Role
from services.master.auth import Reader

router = APIRouter(prefix="/v1/whoami", tags=["auth"])


class Identity(BaseModel):
    name: str
    role: Role


@router.get("")
async def whoami(principal: Reader) -> Identity:
    """The token's name (the audit actor) and role (``read`` or ``admin``); 401 for an unknown token."""
    return Identity(name=principal.name, role=principal.role)
