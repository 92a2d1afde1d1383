"""The rollouts API's domain logic: master's view of every rollout, and the operator's commands.

A command (pause, resume, abort, promote) is an ordinary audited change of the model's entry in the state
document (If-Match as every write); the nodes it moves are told to sync at once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from services.common.completeness import ModelScan
from services.common.contracts import AuditEntry, ModelPolicy, RolloutPolicy, RolloutRecord
from services.common.errors import Conflict, NotFound, PreconditionFailed
from services.master.desired import ChangeResult, DesiredStore
from services.master.rollout_driver import RolloutDriver
from services.master.rollout_steps import bake_remaining, operate

COMMANDS = ("pause", "resume", "abort", "promote")


class WaveView(BaseModel):
    nodes: list[str]
    state: str


class RolloutView(BaseModel):
    """One model's rollout as the API and fleetctl show it."""

    model: str
    version: int
    previous: list[int]
    state: str = Field(description="running|paused|baking|waiting|reverted|aborted|done")
    wave: int = Field(description="0-based index of the current wave")
    waves: list[WaveView]
    bake_seconds: float
    bake_remaining_seconds: float | None
    waiting_for: str | None = Field(description="why it waits (e.g. 'node-3 unhealthy')")
    reason: str | None = Field(description="why it was reverted or aborted: gate and figures")
    promoted: bool
    bad_versions: list[int]
    started_at: datetime
    updated_at: datetime


class RolloutList(BaseModel):
    generation: int
    rollouts: list[RolloutView]


def rollout_view(model: str, policy: ModelPolicy, record: RolloutRecord, driver: RolloutDriver) -> RolloutView:
    """The record from the document plus what only master's memory knows (wait reason, traffic window)."""
    waiting = driver.waiting_for.get(model) if record.state in ("running", "baking") else None
    baking = record.state == "baking"
    remaining = bake_remaining(record, driver.window(model, policy), now=datetime.now(UTC)) if baking else None
    return RolloutView(
        model=model,
        version=record.version,
        previous=record.previous,
        state="waiting" if waiting else record.state,
        wave=record.wave,
        waves=[WaveView(nodes=w.nodes, state=w.state) for w in record.waves],
        bake_seconds=record.bake_seconds,
        bake_remaining_seconds=round(remaining, 1) if remaining is not None else None,
        waiting_for=waiting,
        reason=record.reason,
        promoted=record.promoted,
        bad_versions=policy.bad_versions,
        started_at=record.started_at,
        updated_at=record.updated_at,
    )


async def list_rollouts(driver: RolloutDriver) -> RolloutList:
    """Every model with a rollout recorded in the state document (the last one of each model)."""
    document, generation = await driver.fleet.store.read_state()
    views = [
        rollout_view(name, policy, policy.rollout_state, driver)
        for name, policy in sorted(document.models.items())
        if policy.rollout_state is not None
    ]
    return RolloutList(generation=generation, rollouts=views)


async def get_rollout(driver: RolloutDriver, model: str) -> tuple[RolloutView, int]:
    """One model's rollout (404 when none is recorded) and the document generation."""
    document, generation = await driver.fleet.store.read_state()
    policy = document.models.get(model)
    if policy is None or policy.rollout_state is None:
        raise NotFound(f"no rollout recorded for model {model!r}", model=model)
    return rollout_view(model, policy, policy.rollout_state, driver), generation


async def rollout_command(
    driver: RolloutDriver, model: str, command: str, *, actor: str, if_match: int | None
) -> ChangeResult:
    """pause | resume | abort | promote the model's rollout (409 when its state does not allow it)."""
    touched: list[str] = []

    def mutate(base: ModelPolicy, _scan: ModelScan | None) -> ModelPolicy:
        if base.rollout_state is None:
            raise NotFound(f"no rollout recorded for model {model!r}", model=model)
        touched[:] = sorted({n for w in base.rollout_state.waves for n in w.nodes})
        return operate(base, command, actor=actor, now=datetime.now(UTC))

    result = await driver.fleet.store.change(model, mutate, actor=actor, action=f"rollout {command}", if_match=if_match)
    if result.changed and command in ("abort", "resume"):
        await driver.sync_nodes(touched)
    driver.trigger(model)
    return result


FLEET_DEFAULT_AUDIT_NAME = "_rollout"


class FleetRolloutPolicy(BaseModel):
    """The fleet's default rollout policy (None = models without their own policy roll out at once)."""

    generation: int
    rollout: RolloutPolicy | None


async def fleet_default(store: DesiredStore) -> FleetRolloutPolicy:
    document, generation = await store.read_state()
    return FleetRolloutPolicy(generation=generation, rollout=document.rollout)


async def set_fleet_default(
    store: DesiredStore, rollout: RolloutPolicy | None, *, actor: str, if_match: int | None
) -> FleetRolloutPolicy:
    """Write the document's top-level ``rollout`` (If-Match as every change; audited as ``_rollout``)."""
    document, generation = await store.read_state()
    if store.guard.alarm is not None:
        raise Conflict(f"no change while the state document is in alarm: {store.guard.alarm.message}")
    if if_match is not None and if_match != generation:
        raise PreconditionFailed(
            f"the desired state is at generation {generation}, not {if_match}: re-read and retry",
            current_generation=generation,
        )
    if document.rollout == rollout:
        return FleetRolloutPolicy(generation=generation, rollout=rollout)
    new_document = document.model_copy(
        update={
            "rollout": rollout,
            "revision": store.guard.next_revision,
            "updated_at": datetime.now(UTC),
            "updated_by": actor,
        }
    )

    def audit_entry(new_generation: int) -> AuditEntry:
        return AuditEntry(
            actor=actor,
            action="rollout default " + ("set" if rollout is not None else "removed"),
            model=FLEET_DEFAULT_AUDIT_NAME,
            generation=new_generation,
            reason=rollout.model_dump_json() if rollout is not None else None,
        )

    new_generation, _ = await store.write_state(new_document, generation, audit_entry)
    return FleetRolloutPolicy(generation=new_generation, rollout=rollout)
