"""The desired-state document as the puller consumes it: read only when its generation changed,
validated, and the last good one kept (in memory and in FLEET_STATE_DIR) when a new one is invalid.

The document is precious: once a generation has been seen, a missing document or a reset one (its
revision went back: ``successor_problem``) does not rule. The last good one keeps ruling, so retired
models stay retired, and the alarm (``desired-state-missing`` / ``-reset``) shows in status and
metrics until master writes a new revision (the admin's ``fleetctl state restore|accept``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from google.cloud import storage
from pydantic import ValidationError

from services.common.atomic import atomic_write_bytes
from services.common.completeness import RemoteObject
from services.common.contracts import Alarm, DesiredStateDocument, StateProblem, successor_problem
from services.common.contracts.base import utcnow
from services.common.gcs import STATE_OBJECT, read_object

logger = logging.getLogger(__name__)

LAST_GOOD_DOCUMENT = "puller-last-good-state.json"


class DocumentSource:
    """``gs://bucket/prefix/_fleet/state.json`` → the document in force (absent = defaults)."""

    def __init__(self, *, client: storage.Client, bucket: str, prefix: str, timeout: float, state_dir: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.name = prefix + STATE_OBJECT
        self.timeout = timeout
        self.state_dir = state_dir
        self.document: DesiredStateDocument | None = None
        self.generation: int | None = None
        self.error: str | None = None
        self.reads = 0
        self.problem: StateProblem | None = None
        self._failed_generation: int | None = None

    def load_last_good(self) -> None:
        """At start: the last good document seen before a restart (so an unchanged one is not re-read)."""
        path = self.state_dir / LAST_GOOD_DOCUMENT
        try:
            document = DesiredStateDocument.from_json(path.read_bytes())
            generation = int((path.parent / (path.name + ".generation")).read_text())
        except (OSError, ValueError, ValidationError):
            return
        self.document, self.generation = document, generation

    async def current(self, listing: Sequence[RemoteObject]) -> DesiredStateDocument | None:
        """The document in force; None only when no valid document was ever seen (change nothing)."""
        entry = next((o for o in listing if o.name == self.name), None)
        if entry is None:
            if self.document is not None and self.generation is not None:
                return self._refuse("desired-state-missing", None, None)
            self.document, self.generation, self.error, self.problem = DesiredStateDocument(), None, None, None
            return self.document
        if self.document is not None and self.generation == entry.generation:
            self.error, self.problem = None, None
            return self.document
        if self.error is not None and self._failed_generation == entry.generation:
            return self.document
        result = await asyncio.to_thread(read_object, self.client, self.bucket, self.name, timeout=self.timeout)
        self.reads += 1
        if result is None:  # deleted between the listing and the read: next pass sees it gone
            return self.document
        data, generation = result
        try:
            document = DesiredStateDocument.from_json(data)
        except ValidationError as exc:
            self._failed_generation = entry.generation
            self.problem = None
            self.error = f"generation {generation}: {exc.error_count()} validation error(s)"
            logger.warning("desired-state document rejected, keeping the last good one: %s", exc)
            return self.document
        if self.document is not None and self.generation is not None:
            problem = successor_problem(
                last_revision=self.document.revision,
                last_generation=self.generation,
                found=document,
                generation=generation,
            )
            if problem is not None:
                return self._refuse(problem, document, entry.generation)
        self.document, self.generation, self.error, self.problem = document, generation, None, None
        await asyncio.to_thread(self._save_last_good, data, generation)
        return document

    def _refuse(
        self, problem: StateProblem, found: DesiredStateDocument | None, generation: int | None
    ) -> DesiredStateDocument | None:
        """Keep the last good document ruling; the alarm says why (read once per refused generation)."""
        assert self.document is not None
        self._failed_generation = generation
        if found is None:
            error = f"gone from the bucket after generation {self.generation}"
        else:
            error = f"generation {generation} has revision {found.revision}, after revision {self.document.revision}"
        if self.problem != problem or self.error != error:
            logger.error("desired-state document %s: keeping generation %s ruling", error, self.generation)
        self.problem, self.error = problem, error
        return self.document

    @property
    def alarm_kind(self) -> str:
        return self.problem or "desired-state-invalid"

    def alarm(self) -> Alarm:
        kept = "keeping the last good one" if self.document is not None else "no good document yet: nothing changes"
        if self.problem == "desired-state-missing":
            message = f"desired-state document {self.error}; {kept} (retired models stay retired)"
        elif self.problem == "desired-state-reset":
            message = f"desired-state document reset: {self.error}; {kept} (retired models stay retired)"
        else:
            message = f"desired-state document failed validation ({self.error}); {kept}"
        message += "; an admin decides: fleetctl state restore|accept" if self.problem else ""
        return Alarm(kind=self.alarm_kind, severity="critical", since=utcnow(), message=message)

    def _save_last_good(self, data: bytes, generation: int) -> None:
        try:
            atomic_write_bytes(self.state_dir / LAST_GOOD_DOCUMENT, data)
            atomic_write_bytes(self.state_dir / (LAST_GOOD_DOCUMENT + ".generation"), str(generation).encode())
        except OSError as exc:
            logger.warning("cannot keep the last good document in %s: %s", self.state_dir, exc)
