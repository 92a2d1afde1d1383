"""The model manager: filesystem polls, availability-preserving loads and unloads, version states.

One manager thread does everything that changes versions, inline and one at a time, as TF Serving
does with --num_load_threads=0: a load that is retrying stalls every model's transitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import TFServingError
from services.common.tfs import VersionState as State
from services.local_serving.config import ModelSource, rpc_error
from services.local_serving.discovery import BasePathMissing, aspired_versions
from services.local_serving.servable import Servable

logger = logging.getLogger(__name__)

LoadFunction = Callable[[str, int, Path], Servable]


@dataclass(frozen=True)
class VersionStatus:
    """One version's state and, for a failed load, the error (a gRPC code name and message)."""

    version: int
    state: State
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class FinalEvent:
    """A version reached AVAILABLE or END; ``seq`` orders events."""

    seq: int
    model: str
    status: VersionStatus


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
    ) -> None:
        self._load = load
        self._poll_wait = poll_wait_seconds
        self._max_retries = max(max_num_load_retries, 0)
        self._retry_interval = max(load_retry_interval_seconds, 0.0)
        self._on_load_attempt = on_load_attempt
        self._cond = threading.Condition()
        self._sources: dict[str, ModelSource] = {}
        self._aspired: dict[str, dict[int, Path]] = {}
        self._errored: set[tuple[str, int]] = set()
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._servables: dict[str, dict[int, Servable]] = {}
        self._finals: list[FinalEvent] = []
        self._seq = 0
        self._reconcile_wanted = False
        self._stopping = False
        #: Completed filesystem polls (dropped ones, e.g. for a missing base_path, do not count).
        self.polls = 0
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)

    # ---- control -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the manager thread (the first filesystem poll happens at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the manager thread to stop after its current step."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def set_sources(self, sources: dict[str, ModelSource]) -> int:
        """Replace the watched models; dropped ones unload in the background. Returns the event seq."""
        with self._cond:
            for name in set(self._sources) - set(sources):
                self._aspired.pop(name, None)
                self._errored = {key for key in self._errored if key[0] != name}
            self._sources = dict(sources)
            self._reconcile_wanted = True
            self._cond.notify_all()
            return self._seq

    def model_names(self) -> set[str]:
        """Names currently configured."""
        with self._cond:
            return set(self._sources)

    def wait_first_final(self, names: Iterable[str], after_seq: int) -> dict[str, VersionStatus]:
        """Block (no timeout) until each model has a version AVAILABLE or END after ``after_seq``."""
        wanted = set(names)
        reached: dict[str, VersionStatus] = {}
        with self._cond:
            while True:
                for event in self._finals:
                    if event.seq > after_seq and event.model in wanted and event.model not in reached:
                        reached[event.model] = event.status
                if set(reached) >= wanted or self._stopping:
                    return reached
                self._cond.wait()

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

    # ---- the manager thread ----------------------------------------------------------------------
    def _run(self) -> None:
        next_poll = time.monotonic() if self._poll_wait >= 0 else float("inf")
        while True:
            with self._cond:
                while not self._stopping and not self._reconcile_wanted and time.monotonic() < next_poll:
                    self._cond.wait(timeout=min(next_poll - time.monotonic(), 3600.0))
                if self._stopping:
                    return
                self._reconcile_wanted = False
            if time.monotonic() >= next_poll:
                self._poll_filesystem()
                next_poll = time.monotonic() + self._poll_wait if self._poll_wait > 0 else float("inf")
            try:
                self._reconcile()
            except Exception:  # the manager thread must survive anything
                logger.exception("model manager step failed")

    def _poll_filesystem(self) -> None:
        with self._cond:
            sources = dict(self._sources)
        found: dict[str, dict[int, Path]] = {}
        for name, source in sources.items():
            try:
                found[name] = aspired_versions(source)
            except BasePathMissing:
                # Upstream drops the whole poll: no model changes until the directory appears.
                logger.error(
                    "File system storage path source: Could not find base path %s for servable %s",
                    source.base_path,
                    name,
                    extra={"model": name},
                )
                return
        with self._cond:
            for name, versions in found.items():
                if self._sources.get(name) != sources[name]:
                    continue  # the config changed while we listed
                self._aspired[name] = versions
                # A failed version is retried only once it left the disk (or the config) and came back.
                self._errored = {key for key in self._errored if key[0] != name or key[1] in versions}
            self.polls += 1

    def _reconcile(self) -> None:
        while not self._stopping:
            action = self._next_action()
            if action is None:
                return
            _, name, version, path = action
            if path is None:
                self._unload(name, version)
            else:
                self._load_with_retries(name, version, path)

    def _next_action(self) -> tuple[str, str, int, Path | None] | None:
        """AvailabilityPreservingPolicy: unload only once an aspired version serves; load newest first."""
        with self._cond:
            for name in sorted(set(self._sources) | set(self._servables)):
                aspired = self._aspired.get(name, {}) if name in self._sources else {}
                ready = set(self._servables.get(name, {}))
                unaspired_ready = sorted(ready - set(aspired))
                if unaspired_ready and (not aspired or ready & set(aspired) or len(unaspired_ready) > 1):
                    return ("unload", name, unaspired_ready[0], None)
                to_load = sorted(
                    (v for v in aspired if v not in ready and (name, v) not in self._errored), reverse=True
                )
                for version in to_load:
                    current = self._statuses.get(name, {}).get(version)
                    if current is None or current.state in (State.END, State.UNKNOWN):
                        self._set(name, VersionStatus(version, State.START))
                if to_load:
                    return ("load", name, to_load[0], aspired[to_load[0]])
            return None

    def _set(self, name: str, status: VersionStatus) -> None:
        """Record a state change (caller holds the lock)."""
        self._statuses.setdefault(name, {})[status.version] = status
        self._seq += 1
        if status.state in (State.AVAILABLE, State.END):
            self._finals.append(FinalEvent(self._seq, name, status))
            del self._finals[:-1000]
        self._cond.notify_all()

    def _load_with_retries(self, name: str, version: int, path: Path) -> None:
        with self._cond:
            self._set(name, VersionStatus(version, State.LOADING))
        attempt = 0
        while True:
            try:
                servable = self._load(name, version, path)
            except TFServingError as exc:
                error = exc
            except Exception as exc:  # anything TensorFlow throws is a failed load, never a crash
                error = rpc_error("UNKNOWN", f"{type(exc).__name__}: {exc}")
            else:
                self._report_attempt(name, ok=True)
                with self._cond:
                    self._servables.setdefault(name, {})[version] = servable
                    self._set(name, VersionStatus(version, State.AVAILABLE))
                logger.info(
                    "Successfully loaded servable version %s of %s",
                    version,
                    name,
                    extra={"model": name, "version": version},
                )
                return
            self._report_attempt(name, ok=False)
            if attempt >= self._max_retries or self._stopping:
                break
            attempt += 1
            logger.info(
                "Retrying load of %s version %s (%s of %s): %s",
                name,
                version,
                attempt,
                self._max_retries,
                error.detail,
                extra={"model": name, "version": version},
            )
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, timeout=self._retry_interval)
        logger.error(
            "Loading servable %s version %s failed: %s: %s",
            name,
            version,
            error.code,
            error.detail,
            extra={"model": name, "version": version},
        )
        with self._cond:
            self._errored.add((name, version))
            self._set(name, VersionStatus(version, State.END, error.code, error.detail))

    def _report_attempt(self, name: str, *, ok: bool) -> None:
        if self._on_load_attempt is not None:
            self._on_load_attempt(name, ok)

    def _unload(self, name: str, version: int) -> None:
        with self._cond:
            self._set(name, VersionStatus(version, State.UNLOADING))
            # In-flight Predicts keep their reference; new ones can no longer find this version.
            self._servables.get(name, {}).pop(version, None)
            if not self._servables.get(name):
                self._servables.pop(name, None)
            self._set(name, VersionStatus(version, State.END))
        logger.info("Unloaded servable version %s of %s", version, name, extra={"model": name, "version": version})
