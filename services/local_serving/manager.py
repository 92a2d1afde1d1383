"""The model manager: aspired-versions requests, availability-preserving loads and unloads, states.

Shaped like upstream's AspiredVersionsManager (core/aspired_versions_manager.cc):

- a filesystem poller thread (FileSystemStoragePathSource) enqueues one aspired-versions request per
  model into a map keyed by name, so the newest request for a model replaces an older pending one;
- the manager thread ticks every ``manage_state_interval_seconds`` (upstream 100 ms); each tick it
  takes the pending requests, asks the policy for every model's next action, sorts them with any
  unload before any load (CompareActions) and performs ONE action;
- with ``num_load_threads`` 0 a load (and its retries) runs inline on the manager thread and stalls
  every model; otherwise it runs in a pool and the manager keeps ticking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.common.tfs import VersionState as State
from services.local_serving.config import ModelSource, rpc_error
from services.local_serving.discovery import poll_versions
from services.local_serving.loading import LoadAttempts, LoadFunction
from services.local_serving.servable import Servable

logger = logging.getLogger(__name__)

__all__ = ["LoadFunction", "ModelManager", "VersionStatus"]

MANAGE_STATE_INTERVAL_SECONDS = 0.1  # upstream manage_state_interval_micros default


@dataclass(frozen=True)
class VersionStatus:
    """One version's state and, for a failed load, the error (a gRPC code name and message)."""

    version: int
    state: State
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class Action:
    """One policy decision: unload, or load ``path``."""

    kind: str  # "unload" sorts before "load"
    name: str
    version: int
    path: Path | None = None


class ModelManager:
    """Owns every model's versions; thread-safe for readers (Predict, GetModelStatus)."""

    def __init__(
        self,
        *,
        load: LoadFunction,
        poll_wait_seconds: float,
        max_num_load_retries: int,
        load_retry_interval_seconds: float,
        on_load_attempt: Callable[[str, bool], None] | None = None,
        num_load_threads: int = 0,
        manage_state_interval_seconds: float = MANAGE_STATE_INTERVAL_SECONDS,
        memory_budget_bytes: int = 0,
        load_delay_seconds: float = 0.0,
    ) -> None:
        self._poll_wait = poll_wait_seconds
        self._tick = manage_state_interval_seconds
        self._cond = threading.Condition()
        self._attempts = LoadAttempts(
            load=load,
            max_num_load_retries=max_num_load_retries,
            load_retry_interval_seconds=load_retry_interval_seconds,
            on_load_attempt=on_load_attempt,
            memory_budget_bytes=memory_budget_bytes,
            load_delay_seconds=load_delay_seconds,
            keep_retrying=self._keep_retrying,
        )
        self._sources: dict[str, ModelSource] = {}
        self._pending: dict[str, dict[int, Path]] = {}
        self._aspired: dict[str, dict[int, Path]] = {}
        self._errored: set[tuple[str, int]] = set()
        self._loading: set[tuple[str, int]] = set()
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._status_seq: dict[tuple[str, int], int] = {}
        self._servables: dict[str, dict[int, Servable]] = {}
        self._seq = 0
        self._stopping = False
        self._num_load_threads = 0
        self._executor: ThreadPoolExecutor | None = None
        self.set_num_load_threads(num_load_threads)
        #: Completed filesystem polls (dropped ones, e.g. for a missing base_path, do not count).
        self.polls = 0
        #: Every action taken, in order: ("load" | "unload", model, version); read by tests.
        self.actions: list[tuple[str, str, int]] = []
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="fs-storage-path-source", daemon=True)

    # ---- control -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the manager thread; the filesystem poller starts with the first set_sources()."""
        self._thread.start()

    def stop(self) -> None:
        """Ask both threads to stop after their current step."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def set_num_load_threads(self, num_load_threads: int) -> None:
        """Switch between inline loads (0) and a pool, like BasicManager::SetNumLoadThreads.

        Going to or from fewer than 2 threads waits for every load already scheduled (upstream
        destroys the old executor inside its lock), so the caller blocks until they finish.
        """
        old, old_count = self._executor, self._num_load_threads
        new = ThreadPoolExecutor(num_load_threads, thread_name_prefix="load") if num_load_threads > 0 else None
        with self._cond:
            self._executor, self._num_load_threads = new, max(num_load_threads, 0)
        if old is not None:
            old.shutdown(wait=old_count < 2 or num_load_threads < 2)

    def set_sources(self, sources: dict[str, ModelSource]) -> int:
        """Replace the watched models (FileSystemStoragePathSource::UpdateConfig); returns the event seq.

        Dropped models get an empty aspired-versions request at once; kept and new ones change at the
        next poll. The first call starts the poller, which polls at once (then every poll_wait).
        """
        with self._cond:
            for name in set(self._sources) - set(sources):
                self._pending[name] = {}
            first = not self._sources and not self._poller.is_alive() and self._poller.ident is None
            self._sources = dict(sources)
            self._cond.notify_all()
            seq = self._seq
        if first:
            self._poller.start()
        return seq

    def model_names(self) -> set[str]:
        """Names currently configured."""
        with self._cond:
            return set(self._sources)

    def wait_until_available_or_end(self, names: Iterable[str], after_seq: int) -> dict[str, VersionStatus]:
        """Block (no timeout) until every model has a version AVAILABLE or END since ``after_seq``.

        Like ServableStateMonitor::WaitUntilServablesReachState for ServableRequest::Latest: per
        model, the highest version whose state (changed after ``after_seq``) is AVAILABLE or END.
        """
        wanted = sorted(set(names))
        with self._cond:
            while True:
                reached = {name: status for name in wanted if (status := self._reached(name, after_seq))}
                if len(reached) == len(wanted) or self._stopping:
                    return reached
                self._cond.wait()

    def _reached(self, name: str, after_seq: int) -> VersionStatus | None:
        known = self._statuses.get(name, {})
        for version in sorted(known, reverse=True):
            status = known[version]
            if self._status_seq[(name, version)] > after_seq and status.state in (State.AVAILABLE, State.END):
                return status
        return None

    # ---- readers ---------------------------------------------------------------------------------
    def statuses(self, name: str) -> list[VersionStatus]:
        """Every version ever seen for ``name``, highest first; NOT_FOUND if none."""
        with self._cond:
            known = self._statuses.get(name)
            if not known:
                raise rpc_error("NOT_FOUND", f"Could not find any versions of model {name}")
            return [known[version] for version in sorted(known, reverse=True)]

    def is_available(self, name: str, version: int) -> bool:
        """True when ``version`` of ``name`` is AVAILABLE now."""
        with self._cond:
            return version in self._servables.get(name, {})

    def servable(self, name: str, version: int | None) -> Servable:
        """The AVAILABLE servable asked for (None = highest AVAILABLE); NOT_FOUND otherwise."""
        with self._cond:
            available = self._servables.get(name, {})
            if version is None:
                if available:
                    return available[max(available)]
                raise rpc_error("NOT_FOUND", f"Servable not found for request: Latest({name})")
            found = available.get(version)
            if found is None:
                raise rpc_error("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
            return found

    def memory_in_use(self) -> int:
        """Bytes held by versions loaded or loading (``--local_only_memory_budget_bytes``)."""
        return self._attempts.memory.in_use()

    # ---- the filesystem poller -------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                sources = dict(self._sources)
            try:
                found = poll_versions(sources)
            except Exception:  # the poller must survive anything the volume does
                logger.exception("filesystem poll failed")
                found = None
            with self._cond:
                if found is not None:
                    for name, versions in found.items():
                        if self._sources.get(name) == sources[name]:  # not reconfigured while we listed
                            self._pending[name] = versions  # newest request per model wins
                    self.polls += 1
                if self._poll_wait <= 0 or self._stopping:
                    return
                self._cond.wait_for(lambda: self._stopping, timeout=self._poll_wait)

    # ---- the manager thread ----------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, timeout=max(next_tick - time.monotonic(), 0.0))
                if self._stopping:
                    return
            next_tick = max(next_tick + self._tick, time.monotonic())
            try:
                self._handle_pending_requests()
                action = self._next_action()
                if action is not None:
                    self._perform(action)
            except Exception:  # the manager thread must survive anything
                logger.exception("model manager step failed")

    def _handle_pending_requests(self) -> None:
        with self._cond:
            pending, self._pending = self._pending, {}
            for name, versions in pending.items():
                self._aspired[name] = versions
                # A failed version is retried only once it left the aspired set and came back.
                self._errored = {key for key in self._errored if key[0] != name or key[1] in versions}
                ready = self._servables.get(name, {})
                for version in versions:
                    current = self._statuses.get(name, {}).get(version)
                    fresh = current is None or current.state in (State.END, State.UNKNOWN)
                    key = (name, version)
                    if fresh and version not in ready and key not in self._errored and key not in self._loading:
                        self._set(name, VersionStatus(version, State.START))

    def _next_action(self) -> Action | None:
        """AvailabilityPreservingPolicy per model, then CompareActions: any unload before any load."""
        with self._cond:
            actions = [
                action
                for name in sorted(set(self._aspired) | set(self._servables))
                if (action := self._policy(name)) is not None
            ]
        actions.sort(key=lambda action: action.kind != "unload")  # stable: name order within a kind
        return actions[0] if actions else None

    def _policy(self, name: str) -> Action | None:
        aspired = self._aspired.get(name, {})
        ready = set(self._servables.get(name, {}))
        unaspired_ready = sorted(ready - set(aspired))
        if unaspired_ready and (not aspired or ready & set(aspired) or len(unaspired_ready) > 1):
            return Action("unload", name, unaspired_ready[0])
        new = [
            v for v in aspired if v not in ready and (name, v) not in self._errored and (name, v) not in self._loading
        ]
        if new:
            version = max(new)
            return Action("load", name, version, aspired[version])
        return None

    def _perform(self, action: Action) -> None:
        self.actions.append((action.kind, action.name, action.version))
        if action.path is None:
            self._unload(action.name, action.version)
            return
        with self._cond:
            self._loading.add((action.name, action.version))
            executor = self._executor
        if executor is None:
            self._load(action.name, action.version, action.path)
        else:
            executor.submit(self._load, action.name, action.version, action.path)

    def _keep_retrying(self, name: str, version: int, wait_seconds: float) -> bool:
        """Before a retry: False if cancelled (stopping, or no longer aspired), else wait and say yes."""
        with self._cond:
            if self._stopping or version not in self._aspired.get(name, {}):
                return False
            return not self._cond.wait_for(lambda: self._stopping, timeout=wait_seconds)

    def _load(self, name: str, version: int, path: Path) -> None:
        try:
            with self._cond:
                self._set(name, VersionStatus(version, State.LOADING))
            fields = {"model": name, "version": version}
            logger.info("Loading servable version {name: %s version: %s}", name, version, extra=fields)
            servable, error = self._attempts.run(name, version, path)
            with self._cond:
                if servable is not None:
                    self._servables.setdefault(name, {})[version] = servable
                    self._set(name, VersionStatus(version, State.AVAILABLE))
                else:
                    assert error is not None
                    self._errored.add((name, version))
                    self._set(name, VersionStatus(version, State.END, error.code, error.detail))
        finally:
            with self._cond:
                self._loading.discard((name, version))
                self._cond.notify_all()

    def _set(self, name: str, status: VersionStatus) -> None:
        """Record a state change (caller holds the lock)."""
        self._statuses.setdefault(name, {})[status.version] = status
        self._seq += 1
        self._status_seq[(name, status.version)] = self._seq
        self._cond.notify_all()

    def _unload(self, name: str, version: int) -> None:
        with self._cond:
            self._set(name, VersionStatus(version, State.UNLOADING))
            # In-flight Predicts keep their reference; new ones can no longer find this version.
            self._servables.get(name, {}).pop(version, None)
            if not self._servables.get(name):
                self._servables.pop(name, None)
            self._attempts.memory.release(name, version)
            self._set(name, VersionStatus(version, State.END))
        logger.info("Unloaded servable version %s of %s", version, name, extra={"model": name, "version": version})
