"""The state document is precious: once master has seen a generation, a missing or reset document raises
an alarm and the last good one keeps ruling until an admin decides (``/v1/state``, ``fleetctl state``).

The last good document and its generation live in ``FLEET_STATE_DIR/state-last-good.json`` (atomic), so a
restarted master still knows what it saw. The rule itself (``successor_problem``) is shared with the
pullers, which keep their own last good document the same way.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from services.common.atomic import atomic_write_json
from services.common.contracts import DesiredStateDocument, Document, StateProblem, successor_problem

logger = logging.getLogger(__name__)

LAST_GOOD_FILE = "state-last-good.json"


class LastGoodState(Document):
    """``state-last-good.json``: the document master last accepted, and its generation."""

    generation: int
    document: DesiredStateDocument


class StateAlarm(BaseModel):
    """Why the bucket's document is not ruling, and what rules instead."""

    kind: StateProblem
    message: str
    since: datetime
    found_generation: int
    found_revision: int | None
    ruling_generation: int
    ruling_revision: int


class StateGuard:
    """Judges each read of the document; holds the last good one and the current alarm."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LAST_GOOD_FILE
        self.last_good: LastGoodState | None = None
        self.alarm: StateAlarm | None = None
        self.found: DesiredStateDocument | None = None
        #: Counts accepts: a read that started before the latest one (``epoch`` then) may predate master's own
        #: write, and is never judged (it would look like a missing or reset document).
        self.epoch = 0

    def load(self) -> None:
        """Read the last good state kept before a restart (none or unreadable: nothing seen yet)."""
        try:
            self.last_good = LastGoodState.read(self.path)
        except FileNotFoundError:
            return
        except (OSError, ValueError, ValidationError) as exc:
            logger.error("%s unreadable (%s): the state document's history starts over", self.path, exc)

    def judge(
        self, found: DesiredStateDocument | None, generation: int, *, read_epoch: int | None = None
    ) -> DesiredStateDocument:
        """The document that rules, given what the bucket holds (``found`` None = no object) as read when
        ``epoch`` was ``read_epoch``."""
        last = self.last_good
        if last is not None and read_epoch is not None and read_epoch != self.epoch:
            return last.document  # read raced with an accept (e.g. master's own write): stale, not judged
        if last is None:
            if found is not None:
                self.accept(found, generation)
            return found or DesiredStateDocument()
        problem = successor_problem(
            last_revision=last.document.revision,
            last_generation=last.generation,
            found=found,
            generation=generation if found is not None else None,
        )
        if problem is None:
            assert found is not None
            self.accept(found, generation)
            return found
        self.found = found
        if self.alarm is None or (self.alarm.kind, self.alarm.found_generation) != (problem, generation):
            self.alarm = StateAlarm(
                kind=problem,
                message=describe(problem, found, generation, last),
                since=datetime.now(UTC),
                found_generation=generation if found is not None else 0,
                found_revision=found.revision if found is not None else None,
                ruling_generation=last.generation,
                ruling_revision=last.document.revision,
            )
            logger.error("state document alarm: %s", self.alarm.message, extra={"generation": generation})
        return last.document

    def accept(self, document: DesiredStateDocument, generation: int) -> None:
        """``document`` at ``generation`` rules from now on (read from the bucket, or written by master)."""
        if self.last_good is not None and self.last_good.generation == generation and self.alarm is None:
            return
        if self.alarm is not None:
            logger.warning("state document alarm cleared at generation %s", generation)
        self.alarm, self.found = None, None
        self.epoch += 1
        self.last_good = LastGoodState(generation=generation, document=document)
        try:
            atomic_write_json(self.path, self.last_good)
        except OSError as exc:
            logger.error("cannot keep the last good state document in %s: %s", self.path, exc)

    @property
    def next_revision(self) -> int:
        """The revision master's next write carries: above the last one, and at least the time in ms, so a
        master that lost its state dir still writes above every revision the pullers have seen."""
        last = self.last_good.document.revision if self.last_good else 0
        return max(last + 1, int(time.time() * 1000))


def describe(problem: StateProblem, found: DesiredStateDocument | None, generation: int, last: LastGoodState) -> str:
    ruling = f"generation {last.generation} (revision {last.document.revision}) keeps ruling"
    if problem == "desired-state-missing":
        return f"the desired-state document is gone from the bucket; {ruling}: fleetctl state restore|accept"
    revision = found.revision if found is not None else 0
    return (
        f"the desired-state document was reset (generation {generation}, revision {revision} after revision "
        f"{last.document.revision}); {ruling}: fleetctl state restore|accept"
    )
