"""``/v1/state``: the desired-state document's alarm (read) and the admin's decision on it (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.master.auth import Admin, Reader
from services.master.routes.common import FleetDep, IfMatch, etag
from services.master.state_ops import StateDecision, StateReport, decide, state_report

router = APIRouter(prefix="/v1/state", tags=["state"])


@router.get("")
async def get_state(fleet: FleetDep, _: Reader, response: Response) -> StateReport:
    """Whether the bucket's document rules, or the last good one does (alarm: missing or reset). The ETag is
    the bucket's generation (0 = no object), the If-Match of restore/accept."""
    report, generation = await state_report(fleet.store)
    response.headers["ETag"] = etag(generation)
    return report


@router.post("/restore")
async def restore_state(fleet: FleetDep, actor: Admin, if_match: IfMatch, response: Response) -> StateDecision:
    """Write the last good document back to the bucket (a new revision); clears the alarm."""
    decision = await decide(fleet.store, action="restore", actor=actor.name, if_match=if_match)
    response.headers["ETag"] = etag(decision.generation)
    return decision


@router.post("/accept")
async def accept_state(fleet: FleetDep, actor: Admin, if_match: IfMatch, response: Response) -> StateDecision:
    """Take the bucket's document (or its absence: defaults) as the truth; retired models stay retired."""
    decision = await decide(fleet.store, action="accept", actor=actor.name, if_match=if_match)
    response.headers["ETag"] = etag(decision.generation)
    return decision
