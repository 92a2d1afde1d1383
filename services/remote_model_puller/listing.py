"""The bucket listing a sync pass works from: the whole models prefix, or only the parts an event named.

A full refresh lists ``<prefix>`` once. A targeted refresh (event-driven sync) lists only the prefixes of
the targets, ``<prefix><model>/`` for a model and the state document plus ``_fleet/golden/`` for
:data:`FLEET_TARGET`, and merges them into the last full listing, so the plan still sees every model.
Without a full listing yet, a targeted refresh lists everything.

:attr:`ListingCache.generations` (object name → generation of the merged listing) is what the event
coalescer checks notifications against: an event is covered once a listing reflects it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.cloud import storage

from services.common.completeness import RemoteObject
from services.common.contracts.golden import GOLDEN_PREFIX
from services.common.gcs import STATE_OBJECT, ListingStats, list_objects

#: The target name of the desired state (``_fleet/state.json``) and the golden requests; never a model.
FLEET_TARGET = "_fleet"


@dataclass
class Listing:
    objects: list[RemoteObject]
    stats: ListingStats
    seconds: float
    full: bool


class ListingCache:
    """The last listing of the models prefix, refreshed whole or per target."""

    def __init__(self, *, bucket: str, prefix: str, timeout: float) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.timeout = timeout
        self.objects: list[RemoteObject] | None = None
        self.generations: dict[str, int] = {}
        #: When the last refresh began (monotonic) and what it listed (None: everything).
        self.started_at: float | None = None
        self.scope: frozenset[str] | None = None

    def target_prefixes(self, target: str) -> list[str]:
        """Object-name prefixes one target's refresh lists."""
        if target == FLEET_TARGET:
            return [self.prefix + STATE_OBJECT, self.prefix + GOLDEN_PREFIX]
        return [f"{self.prefix}{target}/"]

    def refresh(self, client: storage.Client, targets: Iterable[str] | None) -> Listing:
        """List the bucket with ``client`` (blocking: run in a thread); ``targets`` None or no listing
        yet = everything."""
        stats = ListingStats()
        started = time.monotonic()
        if targets is None or self.objects is None:
            self.objects = self._list(client, self.prefix, stats)
            full, self.scope = True, None
        else:
            prefixes = sorted({p for t in targets for p in self.target_prefixes(t)})
            fresh = [obj for p in prefixes for obj in self._list(client, p, stats)]
            kept = [obj for obj in self.objects if not obj.name.startswith(tuple(prefixes))]
            self.objects = kept + fresh
            full, self.scope = False, frozenset(targets)
        self.generations = {obj.name: obj.generation for obj in self.objects}
        self.started_at = started
        return Listing(objects=self.objects, stats=stats, seconds=time.monotonic() - started, full=full)

    def forget(self) -> None:
        """Drop the listing: the next refresh lists everything."""
        self.objects = None

    def _list(self, client: storage.Client, prefix: str, stats: ListingStats) -> list[RemoteObject]:
        return list(list_objects(client, self.bucket, prefix, timeout=self.timeout, stats=stats))
