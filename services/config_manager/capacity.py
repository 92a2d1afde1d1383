"""Capacity is not corruption: a load that ends RESOURCE_EXHAUSTED waits for memory, it is not failed.

TF Serving ends a version whose load does not fit in (GPU) memory with RESOURCE_EXHAUSTED while the old
version keeps serving (availability-preserving policy). The bytes are fine, so the version must not go
to failed.json (which would bar it until it is re-uploaded): it is taken out of models.config, shown as
a *capacity* problem (bytes needed, the server's message) with an alarm, and tried again as soon as
memory may have been freed — a version that was AVAILABLE when the load failed is no longer (another
model unloaded, the operator retired something) — or, since memory can also be freed outside this
server's view, after ``retry_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"

VersionKey = tuple[str, int]


@dataclass(frozen=True)
class CapacityWait:
    """One version waiting for memory on this node."""

    model: str
    version: int
    bytes_needed: int
    message: str
    since: float  # wall clock, for status
    fingerprint: str | None
    #: (model, version) AVAILABLE when the load failed: if one of them leaves, memory was freed.
    loaded_then: frozenset[VersionKey]
    retry_at: float  # monotonic

    @property
    def reason(self) -> str:
        return f"capacity: needs about {self.bytes_needed} bytes (its variables); tfserving said: {self.message}"


def variables_bytes(version_dir: Path) -> int:
    """Bytes of a version's ``variables/`` files: what its weights take once loaded (about)."""
    try:
        return sum(p.stat().st_size for p in (version_dir / "variables").iterdir() if p.is_file())
    except OSError:
        return 0


class CapacityWaits:
    """Versions held out of models.config until memory may have been freed."""

    def __init__(self, *, retry_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._waits: dict[VersionKey, CapacityWait] = {}

    def record(
        self,
        *,
        model: str,
        version: int,
        message: str,
        version_dir: Path,
        fingerprint: str | None,
        loaded_now: frozenset[VersionKey],
    ) -> CapacityWait:
        """A load of (model, version) ended RESOURCE_EXHAUSTED: hold it until memory frees."""
        wait = CapacityWait(
            model=model,
            version=version,
            bytes_needed=variables_bytes(version_dir),
            message=message,
            since=time.time(),
            fingerprint=fingerprint,
            loaded_then=loaded_now - {(model, version)},
            retry_at=self.clock() + self.retry_seconds,
        )
        self._waits[(model, version)] = wait
        logger.warning(
            "version does not fit in tfserving's memory; the current version keeps serving, retried when "
            "memory frees: needs about %s bytes: %s",
            wait.bytes_needed,
            message,
            extra={"model": model, "version": version, "bytes_needed": wait.bytes_needed},
        )
        return wait

    def release(self, loaded_now: frozenset[VersionKey], fingerprints: Mapping[str, Mapping[int, str | None]]) -> None:
        """Let versions go back into the config: memory was freed, time is up, or their bytes changed."""
        now = self.clock()
        for key, wait in list(self._waits.items()):
            freed = wait.loaded_then - loaded_now
            model_prints = fingerprints.get(wait.model)
            gone = model_prints is not None and model_prints.get(wait.version, wait.fingerprint) != wait.fingerprint
            if freed or now >= wait.retry_at or gone:
                why = (
                    f"{sorted(freed)[0][0]}/{sorted(freed)[0][1]} unloaded"
                    if freed
                    else "bytes changed"
                    if gone
                    else f"{self.retry_seconds:.0f}s passed"
                )
                logger.info(
                    "retrying a version that did not fit in memory (%s)",
                    why,
                    extra={"model": wait.model, "version": wait.version},
                )
                del self._waits[key]

    def waiting(self, model: str) -> dict[int, CapacityWait]:
        """Versions of ``model`` held for capacity now."""
        return {v: w for (m, v), w in self._waits.items() if m == model}

    def prune(self, on_disk: Mapping[str, frozenset[int]]) -> None:
        """Forget versions that left the disk."""
        for key in [k for k in self._waits if k[1] not in on_disk.get(k[0], frozenset())]:
            del self._waits[key]

    def __len__(self) -> int:
        return len(self._waits)
