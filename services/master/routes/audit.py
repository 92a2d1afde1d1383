"""``/v1/audit``: who changed what (read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.common.contracts import AuditEntry, validate_model_name
from services.master.auth import Reader
from services.master.routes.common import FleetDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditList(BaseModel):
    entries: list[AuditEntry]


@router.get("")
async def audit(
    fleet: FleetDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    model: Annotated[str | None, Query(max_length=128)] = None,
) -> AuditList:
    """Newest audit entries first."""
    if model is not None:
        validate_model_name(model)
    entries = await fleet.store.audit(limit=min(limit, fleet.settings.audit_read_limit), model=model)
    return AuditList(entries=entries)
