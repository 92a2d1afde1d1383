"""The admin's decision on a state-document alarm (``/v1/state``, ``fleetctl state``).

- ``restore``: write the last good document back (a new revision), the bucket's copy is replaced.
- ``accept``: take what the bucket holds now as the truth (a missing document = every model on the
  default policy), written as a new revision so every puller accepts it too. Models retired in the last
  good document stay retired unless the accepted document names them: a reset never brings a retired
  model back by accident.

Both need the bucket's current generation as If-Match (0 when the object is missing) and are audited
under the reserved name ``_state``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from services.common.contracts import AuditEntry, DesiredStateDocument
from services.common.errors import Conflict, PreconditionFailed
from services.common.worker import PeriodicWorker
from services.master.desired import DesiredStore
from services.master.state_guard import StateAlarm

logger = logging.getLogger(__name__)

STATE_AUDIT_NAME = "_state"


class StateSide(BaseModel):
    present: bool
    generation: int
    revision: int | None
    models: list[str] = Field(default_factory=list)
    retired: list[str] = Field(default_factory=list)


class StateReport(BaseModel):
    """The alarm (None = the bucket's document rules), what rules, and what the bucket holds."""

    alarm: StateAlarm | None
    ruling: StateSide
    bucket: StateSide


class StateDecision(BaseModel):
    action: str
    generation: int
    revision: int
    kept_retired: list[str] = Field(default_factory=list)
    audit_object: str | None = None


def side(document: DesiredStateDocument | None, generation: int) -> StateSide:
    if document is None:
        return StateSide(present=False, generation=generation, revision=None)
    return StateSide(
        present=True,
        generation=generation,
        revision=document.revision,
        models=sorted(document.models),
        retired=sorted(name for name, policy in document.models.items() if not policy.enabled),
    )


async def state_report(store: DesiredStore) -> tuple[StateReport, int]:
    """The report and the bucket's generation (the ETag to send back)."""
    epoch = store.guard.epoch
    found, generation = await store.read_bucket_state()
    ruling = store.guard.judge(found, generation, read_epoch=epoch)
    last = store.guard.last_good
    report = StateReport(
        alarm=store.guard.alarm,
        ruling=side(ruling, last.generation if last else generation),
        bucket=side(found, generation),
    )
    return report, generation


async def decide(store: DesiredStore, *, action: str, actor: str, if_match: int | None) -> StateDecision:
    """``restore`` or ``accept`` (module docstring); 409 without an alarm, 412 on a stale If-Match."""
    epoch = store.guard.epoch
    found, generation = await store.read_bucket_state()
    store.guard.judge(found, generation, read_epoch=epoch)
    alarm, last = store.guard.alarm, store.guard.last_good
    if alarm is None or last is None:
        raise Conflict("the state document is not in alarm: nothing to decide")
    if if_match is not None and if_match != generation:
        raise PreconditionFailed(
            f"the bucket's state document is at generation {generation}, not {if_match}: re-read and retry",
            current_generation=generation,
        )
    kept: list[str] = []
    if action == "restore":
        models = dict(last.document.models)
    else:
        models = dict(found.models) if found is not None else {}
        for name, policy in last.document.models.items():
            if not policy.enabled and name not in models:
                models[name] = policy
                kept.append(name)
    document = DesiredStateDocument(
        models=models, revision=store.guard.next_revision, updated_at=datetime.now(UTC), updated_by=actor
    )

    def audit_entry(new_generation: int) -> AuditEntry:
        return AuditEntry(actor=actor, action=f"state {action}", model=STATE_AUDIT_NAME, generation=new_generation)

    new_generation, audit_object = await store.write_state(document, generation, audit_entry)
    logger.warning(
        "state document alarm resolved by %s: %s (generation %s, revision %s)",
        actor,
        action,
        new_generation,
        document.revision,
        extra={"actor": actor, "generation": new_generation},
    )
    return StateDecision(
        action=action,
        generation=new_generation,
        revision=document.revision,
        kept_retired=sorted(kept),
        audit_object=audit_object,
    )


class StateWatch(PeriodicWorker):
    """Reads the state document every poll interval, so an alarm shows without waiting for a request."""

    name = "state-watch"

    def __init__(self, store: DesiredStore, *, interval: float) -> None:
        super().__init__(interval=interval, jitter=0.1, max_backoff=interval)
        self.store = store

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        await self.store.read_state()
