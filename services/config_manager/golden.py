"""The golden check before traffic: a new version proves its answers before production calls reach it.

For a model with golden requests (``LOCAL/.fleet/golden/<model>.json``, copied by the puller), a
version that is wanted but not yet in the served entry is a *candidate*. It is loaded under the
reserved model name ``_candidate.<model>``, whose base path (``LOCAL/.fleet/candidates/<model>/``)
holds one symlink to that version only, so no unversioned or labelled production call can reach it.
Once it is AVAILABLE, every golden request that fits its signature is sent to it (version pinned) and
judged (:func:`services.common.golden.judge`). Passed: the version may enter the served entry at the
next step, in the same reload that drops the candidate (tfserving unloads before it loads, so memory
peaks at two versions of the model). Failed: recorded in failed.json as ``GOLDEN_CHECK_FAILED`` with
the request, the check and the answer; the old version keeps serving.

Adding ``_candidate.<model>`` is a reload that adds a model name: tfserving blocks every other reload
until the candidate is AVAILABLE or END, so a rollback issued meanwhile waits for that load (bounded by
``load_timeout_seconds``, after which a still-loading candidate is recorded failed). One candidate per
model at a time; the newest pending version first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message
from pydantic import ValidationError

from services.common.contracts.golden import GoldenSet, golden_path
from services.common.contracts.local import fleet_dir
from services.common.errors import TFServingError
from services.common.golden import Verdict, build_requests, describe, judge
from services.common.tfs import ModelEntry, TFServingClient, VersionState, VersionStatus
from services.common.tfs.records import TensorValue
from services.common.tfs.savedmodel import SavedModelUnreadable, read_serving_signatures
from services.config_manager.localdisk import FailedStore

logger = logging.getLogger(__name__)

CANDIDATE_PREFIX = "_candidate."
GOLDEN_CHECK_FAILED = "GOLDEN_CHECK_FAILED"
VersionKey = tuple[str, int]


def candidate_name(model: str) -> str:
    return CANDIDATE_PREFIX + model


def candidate_of(name: str) -> str | None:
    """The model a candidate name stands for (None for a production model name)."""
    return name[len(CANDIDATE_PREFIX) :] if name.startswith(CANDIDATE_PREFIX) else None


@dataclass(frozen=True)
class GoldenView:
    """The golden sets of a step: readable sets, and models whose set exists but cannot be read."""

    sets: Mapping[str, GoldenSet]
    unreadable: Mapping[str, str]

    def governs(self, model: str) -> bool:
        return model in self.sets or model in self.unreadable


class GoldenGate:
    """Decides which versions wait for their golden check, loads candidates and judges them."""

    def __init__(self, root: Path, client: TFServingClient, failed: FailedStore, *, timeout: float) -> None:
        self.root = root
        self.client = client
        self.failed = failed
        self.timeout = timeout
        self.candidates_dir = fleet_dir(root) / "candidates"
        #: (model, version) -> (fingerprint, golden digest) that passed.
        self.passed: dict[VersionKey, tuple[str | None, str]] = {}
        self.view = GoldenView({}, {})

    def read(self, models: Collection[str]) -> GoldenView:
        """Read the node's golden sets of ``models`` (disk I/O: call off the event loop)."""
        sets: dict[str, GoldenSet] = {}
        unreadable: dict[str, str] = {}
        for model in sorted(models):
            path = golden_path(self.root, model)
            try:
                sets[model] = GoldenSet.read(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, ValidationError) as exc:
                unreadable[model] = f"golden set {path} unreadable: {str(exc).splitlines()[0]}"
                if model not in self.view.unreadable:
                    logger.error("%s; new versions wait", unreadable[model], extra={"model": model})
        self.view = GoldenView(sets, unreadable)
        return self.view

    def pending(
        self, model: str, wanted: Collection[int], served: Collection[int], fingerprints: Mapping[int, str | None]
    ) -> dict[int, str]:
        """Versions of ``wanted`` (on disk, not failed) that may not serve yet, with the reason."""
        if not self.view.governs(model):
            return {}
        if model in self.view.unreadable:
            return {v: self.view.unreadable[model] for v in wanted if v not in served}
        digest = self.view.sets[model].digest()
        return {
            v: "waiting for its golden check"
            for v in wanted
            if v not in served and self.passed.get((model, v)) != (fingerprints.get(v), digest)
        }

    def forget_stale_rejections(self, fingerprints: Mapping[str, Mapping[int, str | None]]) -> None:
        """A changed golden set (or removed one) judges rejected versions again (writes failed.json)."""
        for entry in list(self.failed.document.versions):
            if entry.error_code != GOLDEN_CHECK_FAILED:
                continue
            golden = self.view.sets.get(entry.model)
            if (golden is None and entry.model not in self.view.unreadable) or (
                golden is not None and entry.golden_digest != golden.digest()
            ):
                logger.info("golden set changed: version %s/%s is judged again", entry.model, entry.version)
                self.failed.forget(entry.model, entry.version)

    def candidate_entries(self, pending: Mapping[str, Mapping[int, str]]) -> list[ModelEntry]:
        """One candidate entry per model with a pending version, its symlink dir made ready (disk I/O)."""
        entries: list[ModelEntry] = []
        for model, versions in sorted(pending.items()):
            if not versions or model not in self.view.sets:
                continue
            version = max(versions)
            base = self._link(model, version)
            entries.append(ModelEntry(name=candidate_name(model), base_path=str(base), versions=(version,)))
        self._remove_links_except({candidate_of(e.name) or "" for e in entries})
        return entries

    def _link(self, model: str, version: int) -> Path:
        base = self.candidates_dir / model
        base.mkdir(parents=True, exist_ok=True)
        target = self.root / model / str(version)
        link = base / str(version)
        for other in base.iterdir():
            if other != link:
                other.unlink(missing_ok=True)
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)
        return base

    def _remove_links_except(self, models: set[str]) -> None:
        if not self.candidates_dir.is_dir():
            return
        for path in self.candidates_dir.iterdir():
            if path.name not in models:
                shutil.rmtree(path, ignore_errors=True)

    async def examine(
        self,
        candidates: Collection[ModelEntry],
        live: Mapping[str, list[VersionStatus] | None],
        serving: Mapping[str, int | None],
        fingerprints: Mapping[str, Mapping[int, str | None]],
    ) -> int:
        """Judge every candidate that is AVAILABLE; returns how many were judged."""
        ended = 0
        for entry in candidates:
            model = candidate_of(entry.name)
            if model is None or model not in self.view.sets:
                continue
            version = entry.versions[0]
            status = next((s for s in live.get(entry.name) or () if s.version == version), None)
            fingerprint = fingerprints.get(model, {}).get(version)
            # A failed load is judged like any other (verdicts.judge_loads maps the name back).
            if status is not None and status.state == VersionState.AVAILABLE:
                await self._judge(entry.name, model, version, serving.get(model), fingerprint)
                ended += 1
        return ended

    async def _judge(self, name: str, model: str, version: int, serving: int | None, fingerprint: str | None) -> None:
        golden = self.view.sets[model]
        started = time.monotonic()
        verdicts = await self.run_set(golden, name, version, model=model, serving=serving, stop_at_failure=True)
        failed = [v for v in verdicts if not v.passed]
        if not failed:
            self.passed[(model, version)] = (fingerprint, golden.digest())
            logger.info(
                "golden check passed (%d requests in %.2fs)",
                len(verdicts),
                time.monotonic() - started,
                extra={"model": model, "version": version},
            )
            return
        failure = f"golden request {failed[0].request!r}: {'; '.join(failed[0].failures)}"
        if failed[0].answer:
            failure += f"; answer: {failed[0].answer}"
        logger.error("golden check failed, version rejected: %s", failure, extra={"model": model, "version": version})
        await asyncio.to_thread(
            self.failed.record,
            model=model,
            version=version,
            code=GOLDEN_CHECK_FAILED,
            message=failure,
            fingerprint=fingerprint,
            golden_digest=golden.digest(),
        )

    async def run_set(
        self,
        golden: GoldenSet,
        name: str,
        version: int,
        *,
        model: str,
        serving: int | None,
        stop_at_failure: bool = False,
    ) -> list[Verdict]:
        """Run ``golden`` against version ``version`` of tfserving model ``name`` (``model``'s bytes on disk
        give the signatures; ``serving``: the version to agree with). A set where nothing fits fails."""
        try:
            signatures = await asyncio.to_thread(read_serving_signatures, self.root / model / str(version))
        except SavedModelUnreadable:
            signatures = await self.client.get_model_metadata(name, version=version, timeout=self.timeout)
        requests, misfits = build_requests(golden, signatures)
        misfit = [Verdict(request=m.split(":", 1)[0], failures=(f"does not fit: {m}",)) for m in misfits]
        if not requests:
            return misfit or [Verdict(request="*", failures=("the golden set has no requests",))]
        if misfits:
            # A request for a signature this version changed (allow_signature_change) is not run; the
            # version is judged on the requests that fit. A test run (``stop_at_failure`` off) lists them.
            logger.info("golden requests not fitting version %s of %s: %s", version, model, "; ".join(misfits))
        verdicts: list[Verdict] = [] if stop_at_failure else misfit
        for request_name, request in requests:
            verdict = await self._run_one(golden, request_name, request, name, model, version, serving)
            verdicts.append(verdict)
            if stop_at_failure and not verdict.passed:
                break
        return verdicts

    async def _run_one(
        self,
        golden: GoldenSet,
        request_name: str,
        request: Message,
        name: str,
        model: str,
        version: int,
        serving: int | None,
    ) -> Verdict:
        checks = next(r.checks for r in golden.requests if r.name == request_name)
        try:
            outputs = await self.client.predict_request(request, name=name, version=version, timeout=self.timeout)
        except TFServingError as exc:
            return Verdict(request_name, (f"Predict failed: {exc.code}: {exc.detail}",))
        reference: Mapping[str, TensorValue] | None = None
        if checks.agrees_with_serving is not None and serving is not None and serving != version:
            try:
                reference = await self.client.predict_request(
                    request, name=model, version=serving, timeout=self.timeout
                )
            except TFServingError as exc:
                return Verdict(request_name, (f"the serving version {serving} did not answer: {exc.detail}",))
        return Verdict(request_name, tuple(judge(checks, outputs, reference)), describe(outputs))
