"""Talking to tfserving for the reconciler: live states, signatures, reload with a deadline, load wait.

Every call has a deadline. "Unreachable" (UNAVAILABLE, DEADLINE_EXCEEDED on a read) stops the pass
before anything changes on disk or in the config: :class:`TFServingUnreachable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from services.common.errors import TFServingError, Unavailable
from services.common.tfs import ModelEntry, TFServingClient, VersionStatus
from services.common.tfs.savedmodel import SavedModelUnreadable, read_serving_signatures
from services.config_manager.loads import LoadTracker
from services.config_manager.signatures import InputSignature, input_signature

logger = logging.getLogger(__name__)

PROBE_MODEL = "__modelfleet_probe__"
_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})
_CONCURRENCY = 8

# Reconnect fast after a tfserving restart (gRPC's default backoff grows to 120 s, and a channel in
# backoff fails every call at once); a private subchannel pool keeps that state to this client.
GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.use_local_subchannel_pool", 1),
)
RECONNECT_WAIT_SECONDS = 2.2

Statuses = dict[str, list[VersionStatus] | None]


class TFServingUnreachable(Unavailable):
    """tfserving did not answer: change nothing, delete nothing, retry with backoff."""


def _unreachable(exc: TFServingError) -> bool:
    return exc.code in _UNREACHABLE


class LiveView:
    """Reads tfserving's state and applies configs through one :class:`TFServingClient`."""

    def __init__(self, client: TFServingClient, *, status_timeout: float, reload_timeout: float) -> None:
        self.client = client
        self.status_timeout = status_timeout
        self.reload_timeout = reload_timeout
        self._signatures: dict[tuple[str, int, str | None], InputSignature] = {}
        self._unreadable_on_disk: set[tuple[str, int, str | None]] = set()
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def probe(self) -> None:
        """Raise :class:`TFServingUnreachable` unless tfserving answers (NOT_FOUND counts as an answer)."""
        await self.statuses([PROBE_MODEL])

    async def status_of(self, model: str) -> list[VersionStatus] | None:
        """GetModelStatus of one model; None when tfserving does not know it."""
        async with self._limit:
            try:
                return await self.client.get_model_status(model, timeout=self.status_timeout)
            except TFServingError as exc:
                if exc.code == "NOT_FOUND":
                    return None
                if _unreachable(exc):
                    raise TFServingUnreachable(f"tfserving unreachable: {exc.detail}", retry_after=5) from exc
                raise

    async def statuses(self, models: Collection[str]) -> Statuses:
        """GetModelStatus of every model in ``models``, concurrently (bounded).

        An unreachable tfserving is asked once more after the channel's longest reconnect backoff
        (a restarted tfserving is otherwise seen only at the next pass).
        """
        names = sorted(models) or [PROBE_MODEL]
        try:
            results = await asyncio.gather(*(self.status_of(name) for name in names))
        except TFServingUnreachable:
            await asyncio.sleep(RECONNECT_WAIT_SECONDS)
            results = await asyncio.gather(*(self.status_of(name) for name in names))
        return {name: result for name, result in zip(names, results, strict=True) if name != PROBE_MODEL}

    def cached_signatures(self, model: str, fingerprints: Mapping[int, str | None]) -> dict[int, InputSignature]:
        """Known input signatures of the versions on disk now (same bytes)."""
        found: dict[int, InputSignature] = {}
        for version, fingerprint in fingerprints.items():
            signature = self._signatures.get((model, version, fingerprint))
            if signature is not None:
                found[version] = signature
        return found

    async def read_disk_signatures(
        self, model: str, base_path: Path, versions: Collection[int], fingerprints: Mapping[int, str | None]
    ) -> None:
        """Read (once per version and bytes) input signatures from ``saved_model.pb`` on disk, so a
        changed signature is known *before* the version enters the config and takes "latest" traffic.
        A file this cannot read (``saved_model.pbtxt``, an odd encoding) is left to :meth:`read_signatures`
        once tfserving has loaded the version."""
        for version in sorted(versions):
            key = (model, version, fingerprints.get(version))
            if key in self._signatures or key in self._unreadable_on_disk:
                continue
            try:
                specs = await asyncio.to_thread(read_serving_signatures, base_path / str(version))
            except SavedModelUnreadable as exc:
                self._unreadable_on_disk.add(key)
                logger.info(
                    "signature of %s/%s not readable on disk, will ask tfserving once loaded: %s",
                    model,
                    version,
                    exc,
                    extra={"model": model, "version": version},
                )
                continue
            self._signatures[key] = input_signature(specs)

    async def read_signatures(
        self, model: str, versions: Collection[int], fingerprints: Mapping[int, str | None]
    ) -> None:
        """Read (once per version and bytes) the input signature of AVAILABLE ``versions``."""
        for version in sorted(versions):
            key = (model, version, fingerprints.get(version))
            if key in self._signatures:
                continue
            try:
                async with self._limit:
                    specs = await self.client.get_model_metadata(model, version=version, timeout=self.status_timeout)
            except TFServingError as exc:
                if _unreachable(exc):
                    raise TFServingUnreachable(f"tfserving unreachable: {exc.detail}", retry_after=5) from exc
                logger.warning(
                    "signature of %s/%s not readable: %s",
                    model,
                    version,
                    exc.detail,
                    extra={"model": model, "version": version},
                )
                continue
            self._signatures[key] = input_signature(specs)

    def forget_signatures(self, on_disk: Mapping[str, Collection[int]]) -> None:
        """Drop cached signatures of versions no longer on disk (the cache stays bounded)."""
        for key in [k for k in self._signatures if k[1] not in on_disk.get(k[0], ())]:
            del self._signatures[key]
        self._unreadable_on_disk = {k for k in self._unreadable_on_disk if k[1] in on_disk.get(k[0], ())}

    async def reload(self, entries: Sequence[ModelEntry], *, adds_models: bool) -> str:
        """HandleReloadConfigRequest with a deadline; returns ``"ok"`` or ``"deadline"``.

        A deadline on a reload that adds a model is expected (tfserving blocks, without a timeout of
        its own, until new names load): the caller polls GetModelStatus. Anything else raises.
        """
        try:
            await self.client.reload_config(entries, timeout=self.reload_timeout)
        except TFServingError as exc:
            if exc.code == "DEADLINE_EXCEEDED" and adds_models:
                logger.info("reload still loading new models after %.1fs; polling status", self.reload_timeout)
                return "deadline"
            if exc.code == "UNAVAILABLE":
                raise TFServingUnreachable(f"tfserving unreachable: {exc.detail}", retry_after=5) from exc
            raise
        return "ok"

    async def wait_loaded(
        self,
        entries: Sequence[ModelEntry],
        tracker: LoadTracker,
        *,
        wait: float,
        interval: float,
        watch: Collection[str] = (),
    ) -> Statuses:
        """Poll GetModelStatus until every version of ``entries`` is AVAILABLE or failed, or ``wait`` ends.

        ``watch`` names more models to observe meanwhile: tfserving loads on one manager thread, so a
        load of any configured model delays every other change, and the tracker must see it.
        """
        deadline = time.monotonic() + wait
        pending = {entry.name: entry for entry in entries}
        latest: Statuses = {}
        while pending:
            found = await self.statuses(set(pending) | set(watch))
            latest.update(found)
            for name, statuses in found.items():
                tracker.observe(name, statuses)
                if name in pending and tracker.settled(name, statuses, pending[name].versions):
                    del pending[name]
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(interval)
        if pending:
            logger.info(
                "versions still loading after %.1fs: %s", wait, sorted(pending), extra={"models": sorted(pending)}
            )
        return latest
