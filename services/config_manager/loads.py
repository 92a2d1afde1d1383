"""Reading tfserving's version states over time: failed loads, stuck loads, restarts.

GetModelStatus alone cannot tell a fresh failure from a stale one (an END error stays listed after
the version left the config, and is still listed after it is added back with new bytes until the
server's next file-system poll *and* a free manager thread pick the change up), nor a restart (the
process comes back with the same config). The :class:`LoadTracker` remembers when each version
entered the config and what the server has listed since.

Clocks that wait for the server to notice a config change (the start grace of a re-added version,
the re-add delay of a removed one) count **quiet time** only: time since the server last listed any
version STARTing, LOADING or UNLOADING. TF Serving loads inline on its one manager thread and keeps
only the newest aspired-versions update per model while it is busy, so during a long load of another
model a removal can be merged away by a re-add, and a re-added version keeps its old error listed
for as long as that load takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from services.common.tfs import ModelEntry, VersionState, VersionStatus

# tensorflow.error.Code numbers (TF Serving's status.error_code), by name.
TF_ERROR_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE "
    "DATA_LOSS UNAUTHENTICATED"
).split()

_LOADING_STATES = frozenset({VersionState.UNKNOWN, VersionState.START, VersionState.LOADING})
_BUSY_STATES = frozenset({VersionState.START, VersionState.LOADING, VersionState.UNLOADING})


def error_code_name(code: int) -> str:
    """``tensorflow.error.Code`` number → name (``UNKNOWN`` for numbers outside the enum)."""
    return TF_ERROR_CODES[code] if 0 <= code < len(TF_ERROR_CODES) else "UNKNOWN"


@dataclass(frozen=True)
class LoadFailure:
    """A version that will not become AVAILABLE with these bytes."""

    model: str
    version: int
    code: str
    message: str


class LoadTracker:
    """When each (model, version) entered the config and which versions tfserving has listed since."""

    def __init__(
        self,
        *,
        load_timeout: float,
        start_grace: float,
        readd_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load_timeout = load_timeout
        self.start_grace = start_grace
        self.readd_delay = readd_delay
        self.clock = clock
        self.added_at: dict[tuple[str, int], float] = {}
        self.removed_at: dict[tuple[str, int], float] = {}
        self._active_seen: set[tuple[str, int]] = set()
        self._listed: dict[str, set[int]] = {}
        #: When the server last listed a version in a busy state (its manager thread was working).
        self.busy_at = float("-inf")

    def _quiet_since(self, moment: float) -> float:
        """Seconds of server quiet time since ``moment`` (time it listed nothing busy)."""
        return self.clock() - max(moment, self.busy_at)

    def configured(self, entries: Iterable[ModelEntry]) -> None:
        """Record the config just applied: new versions start their clocks, removed ones are forgotten."""
        now = self.clock()
        keys = {(entry.name, v) for entry in entries for v in entry.versions}
        for key in keys - self.added_at.keys():
            self.added_at[key] = now
            self._active_seen.discard(key)
            self.removed_at.pop(key, None)
        for key in self.added_at.keys() - keys:
            del self.added_at[key]
            self._active_seen.discard(key)
            self.removed_at[key] = now
        for key in [k for k, t in self.removed_at.items() if self._quiet_since(t) >= self.readd_delay]:
            del self.removed_at[key]

    def cooling(self, model: str) -> frozenset[int]:
        """Versions of ``model`` that left the config too recently to be added back.

        tfserving applies a policy change at its next file-system poll, and only once its manager thread
        is free; a version removed and added back before then is never unloaded, so a failed one would
        not be tried again. The delay counts server quiet time only (see the module docstring).
        """
        return frozenset(
            v for (m, v), t in self.removed_at.items() if m == model and self._quiet_since(t) < self.readd_delay
        )

    def cooling_left(self) -> float:
        """Seconds until the last cooling version may be added back if the server stays quiet (0: none)."""
        return max((self.readd_delay - self._quiet_since(t) for t in self.removed_at.values()), default=0.0)

    def forget_listings(self) -> None:
        """After a restart: what the old process listed says nothing about the new one."""
        self._listed.clear()
        self._active_seen.clear()
        now = self.clock()
        for key in self.added_at:
            self.added_at[key] = now

    def restart_suspected(self, model: str, statuses: Sequence[VersionStatus] | None) -> str | None:
        """Why tfserving looks restarted, judged from one model it has listed before (None if not).

        A running TF Serving never forgets a version it listed (unloaded ones stay END for good),
        so a listed version that vanished, or a known model that is NOT_FOUND, means a new process.
        """
        before = self._listed.get(model)
        if not before:
            return None
        if statuses is None:
            return f"model {model} is unknown to tfserving although it was loaded before"
        missing = before - {s.version for s in statuses}
        if missing:
            return f"model {model}: versions {sorted(missing)} vanished from GetModelStatus"
        return None

    def observe(self, model: str, statuses: Sequence[VersionStatus] | None) -> None:
        """Remember what tfserving lists for ``model`` (call after :meth:`restart_suspected`)."""
        if statuses is None:
            return
        self._listed.setdefault(model, set()).update(s.version for s in statuses)
        if any(s.state in _BUSY_STATES for s in statuses):
            self.busy_at = self.clock()
        for status in statuses:
            if status.state in _LOADING_STATES or status.state == VersionState.AVAILABLE:
                self._active_seen.add((model, status.version))

    def failures(
        self, model: str, statuses: Sequence[VersionStatus] | None, in_config: Iterable[int]
    ) -> list[LoadFailure]:
        """Versions of ``in_config`` that failed: END with an error, or not AVAILABLE within the timeout."""
        now = self.clock()
        by_version = {s.version: s for s in statuses or ()}
        found: list[LoadFailure] = []
        for version in sorted(in_config):
            key = (model, version)
            added = self.added_at.get(key, now)
            status = by_version.get(version)
            if status is not None and status.state == VersionState.AVAILABLE:
                continue
            if status is not None and status.state == VersionState.END and status.error_code != 0:
                # Fresh only once the server was seen working on it, or stayed quiet long enough to
                # have picked the change up: a busy server keeps the old error listed.
                if key in self._active_seen or self._quiet_since(added) >= self.start_grace:
                    found.append(LoadFailure(model, version, error_code_name(status.error_code), status.error_message))
                continue
            if now - added >= self.load_timeout:
                state = status.state.name if status is not None else "not listed"
                message = f"not AVAILABLE {self.load_timeout:.0f}s after entering models.config (state {state})"
                found.append(LoadFailure(model, version, "DEADLINE_EXCEEDED", message))
        return found

    def settled(self, model: str, statuses: Sequence[VersionStatus] | None, in_config: Iterable[int]) -> bool:
        """True when every version of ``in_config`` is AVAILABLE or has a final failure."""
        pending = set(in_config)
        failed = {f.version for f in self.failures(model, statuses, pending)}
        available = {s.version for s in statuses or () if s.state == VersionState.AVAILABLE}
        return pending <= available | failed
