"""Cloud Storage Pub/Sub notifications, read into :class:`BucketEvent` (plain data, no Pub/Sub types).

GCS sends the event in the message attributes (``eventType``, ``bucketId``, ``objectId``,
``objectGeneration``, ``payloadFormat``, and ``overwroteGeneration`` / ``overwrittenByGeneration`` on
replacements); the payload (``JSON_API_V1``: the object resource, or ``NONE``) is not needed.
fake-gcs-server sends the same attributes. A message that is not a notification of our bucket is
ignored (and acked): it can never become one by waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.common.contracts.base import is_valid_model_name
from services.common.contracts.golden import GOLDEN_PREFIX
from services.common.gcs import STATE_OBJECT
from services.remote_model_puller.listing import FLEET_TARGET

EVENT_TYPES = ("OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE")
EventKind = Literal["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE"]


class NotANotification(ValueError):
    """The message is not a Cloud Storage notification this puller can use (the reason says why)."""


@dataclass(frozen=True)
class BucketEvent:
    """One object change: what happened to which generation of which object."""

    kind: EventKind
    bucket: str
    name: str
    generation: int

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> BucketEvent:
        """Read a notification's attributes; raises :class:`NotANotification` with the reason."""
        kind = attributes.get("eventType")
        if kind not in EVENT_TYPES:
            raise NotANotification(f"eventType {kind!r} is not a Cloud Storage object event")
        bucket, name = attributes.get("bucketId"), attributes.get("objectId")
        if not bucket or not name:
            raise NotANotification("bucketId or objectId missing")
        try:
            generation = int(attributes.get("objectGeneration", ""))
        except ValueError:
            raise NotANotification(f"objectGeneration {attributes.get('objectGeneration')!r} is not a number") from None
        return cls(kind=kind, bucket=bucket, name=name, generation=generation)  # type: ignore[arg-type]

    def reflected_in(self, generations: Mapping[str, int]) -> bool:
        """True when a listing (name → generation) already shows this change, so a pass that made it
        covers the event. A new generation is reflected once the listing holds it or a later one; a
        removed one once the listing no longer holds it (or holds a later one)."""
        listed = generations.get(self.name)
        if self.kind == "OBJECT_FINALIZE":
            return listed is not None and listed >= self.generation
        if self.kind == "OBJECT_METADATA_UPDATE":
            return listed is not None and listed >= self.generation
        return listed != self.generation  # deleted or archived: gone, or replaced by a newer generation


def target_of(event: BucketEvent, *, bucket: str, prefix: str) -> str | None:
    """The sync target an event calls for: a model name, :data:`FLEET_TARGET`, or None (not ours)."""
    if event.bucket != bucket or not event.name.startswith(prefix):
        return None
    rest = event.name[len(prefix) :]
    if rest == STATE_OBJECT or rest.startswith(GOLDEN_PREFIX):
        return FLEET_TARGET
    model, slash, _ = rest.partition("/")
    if not slash or not is_valid_model_name(model):
        return None  # audit records, files beside the models, reserved or invalid names: no node work
    return model
