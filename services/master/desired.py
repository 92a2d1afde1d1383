"""The desired-state document in the bucket, its audit log, and the models API's domain logic.

Only master writes ``<prefix>_fleet/state.json``. Every write is a read-modify-write guarded by the GCS
generation read (``ifGenerationMatch``), so of two concurrent writers the slower one gets 412 and
nothing is lost; callers may also pass the generation they saw (HTTP If-Match). Each change then gets
one audit object under ``<prefix>_fleet/audit/``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.cloud import storage
from pydantic import BaseModel, Field, ValidationError

from services.common import gcs
from services.common.completeness import BucketScan, ModelScan, scan_listing
from services.common.contracts import AuditEntry, DesiredStateDocument, ModelPolicy, ResolvedModel, resolve_model
from services.common.errors import BucketError, InvalidInput, NotFound, PreconditionFailed
from services.master.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
AUDIT_WRITE_ATTEMPTS = 3
# The storage client is blocking and retries connection errors for up to 2 minutes on its own: calls run
# on a small dedicated pool and are abandoned at the deadline, so a bucket outage costs at most this many
# stuck threads and every request still answers 503 within the deadline.
BUCKET_THREADS = 8


class ModelInfo(BaseModel):
    """A model as the models API shows it: bucket facts, overrides and the effective policy."""

    name: str
    in_bucket: bool
    complete_versions: list[int]
    incomplete: dict[str, str] = Field(default_factory=dict, description="version → why not complete")
    overrides: ModelPolicy | None = Field(description="the document's entry (None = default policy)")
    effective: ResolvedModel


class ChangeResult(BaseModel):
    """Outcome of a desired-state change."""

    model: ModelInfo
    generation: int
    changed: bool
    audit_object: str | None = None


def referenced_versions(policy: ModelPolicy) -> set[int]:
    """Versions a policy names explicitly (pins, per-node pins, label targets)."""
    found = set(policy.pinned or []) | set(policy.labels.values())
    for override in policy.nodes.values():
        found |= set(override.pinned or [])
    return found


def model_info(name: str, scan: ModelScan | None, document: DesiredStateDocument) -> ModelInfo:
    """Combine a model's bucket scan with its document entry."""
    complete = scan.complete_versions if scan else []
    overrides = document.models.get(name)
    return ModelInfo(
        name=name,
        in_bucket=scan is not None,
        complete_versions=complete,
        incomplete={str(v): reason for v, reason in sorted(scan.incomplete.items())} if scan else {},
        overrides=overrides,
        effective=resolve_model(overrides or ModelPolicy(), complete),
    )


class DesiredStore:
    """Bucket access for master: listing + completeness, the state document, the audit log."""

    def __init__(self, client: storage.Client, settings: Settings) -> None:
        self.client = client
        self.bucket = settings.bucket_name
        self.prefix = settings.prefix
        self.timeout = min(settings.gcs_timeout_seconds, settings.bucket_deadline_seconds)
        self.deadline = settings.bucket_deadline_seconds
        self.quiet_period = timedelta(seconds=settings.quiet_period_seconds)
        self.marker = settings.complete_marker
        self.cache_seconds = settings.bucket_cache_seconds
        self._scan_cache: tuple[float, BucketScan] | None = None
        self._executor = ThreadPoolExecutor(max_workers=BUCKET_THREADS, thread_name_prefix="bucket")

    def close(self) -> None:
        """Stop the bucket threads (calls still stuck in client retries are abandoned, not awaited)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def state_object(self) -> str:
        return self.prefix + gcs.STATE_OBJECT

    @property
    def audit_prefix(self) -> str:
        return self.prefix + gcs.AUDIT_PREFIX

    async def _bucket(self, what: str, fn: Callable[[], T]) -> T:
        """Run a blocking bucket call with an overall deadline (the client's own retries included)."""
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self._executor, fn), self.deadline)
        except TimeoutError:
            raise BucketError(f"{what}: no answer within {self.deadline:g}s") from None

    async def read_state(self) -> tuple[DesiredStateDocument, int]:
        """The document and its generation (no document = defaults at generation 0)."""
        found = await self._bucket(
            "read desired state",
            lambda: gcs.read_object(self.client, self.bucket, self.state_object, timeout=self.timeout),
        )
        if found is None:
            return DesiredStateDocument(), 0
        data, generation = found
        try:
            return DesiredStateDocument.from_json(data), generation
        except ValidationError as exc:
            raise BucketError(f"{self.state_object} is not a valid desired-state document", retryable=False) from exc

    async def scan(self, model: str | None = None, *, fresh: bool = False) -> BucketScan:
        """Apply the completeness rule to the listing (of one model, or all; the full one is cached briefly)."""
        if model is None and not fresh and self._scan_cache is not None:
            taken_at, cached = self._scan_cache
            if time.monotonic() - taken_at < self.cache_seconds:
                return cached
        prefix = self.prefix + (f"{model}/" if model else "")

        def listing() -> BucketScan:
            objects = list(gcs.list_objects(self.client, self.bucket, prefix, timeout=self.timeout))
            return scan_listing(
                objects, prefix=self.prefix, now=datetime.now(UTC), quiet_period=self.quiet_period, marker=self.marker
            )

        result = await self._bucket(f"list gs://{self.bucket}/{prefix}", listing)
        if model is None:
            self._scan_cache = (time.monotonic(), result)
        return result

    async def list_models(self) -> tuple[list[ModelInfo], int]:
        """Bucket models (and models only in the document) with their effective policy; plus the generation."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan())
        names = sorted(set(scan.models) | set(document.models))
        return [model_info(n, scan.models.get(n), document) for n in names], generation

    async def get_model(self, name: str) -> tuple[ModelInfo, int]:
        """One model (404 when neither in the bucket nor in the document)."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan(name, fresh=True))
        if name not in scan.models and name not in document.models:
            raise NotFound(f"model {name!r} is not in the bucket", model=name)
        return model_info(name, scan.models.get(name), document), generation

    async def change(
        self,
        model: str,
        mutate: Callable[[ModelPolicy, ModelScan | None], ModelPolicy],
        *,
        actor: str,
        action: str,
        if_match: int | None,
    ) -> ChangeResult:
        """Read-modify-write one model's entry with a generation precondition, then append an audit entry."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan(model, fresh=True))
        if if_match is not None and if_match != generation:
            raise PreconditionFailed(
                f"the desired state is at generation {generation}, not {if_match}: re-read and retry",
                current_generation=generation,
            )
        model_scan = scan.models.get(model)
        if model_scan is None and model not in document.models:
            raise NotFound(f"model {model!r} is not in the bucket", model=model)
        complete = model_scan.complete_versions if model_scan else []
        before = document.models.get(model)
        base = before or ModelPolicy()
        try:
            after = ModelPolicy.model_validate(mutate(base.model_copy(deep=True), model_scan).model_dump())
        except ValidationError as exc:
            raise InvalidInput(f"invalid policy for {model}: {exc.errors()[0]['msg']}", model=model) from exc
        self._check_complete(model, referenced_versions(after) - referenced_versions(base), model_scan)
        if after == base:
            return ChangeResult(model=model_info(model, model_scan, document), generation=generation, changed=False)
        models = dict(document.models)
        if after.is_default():
            models.pop(model, None)
        else:
            models[model] = after
        new_document = DesiredStateDocument(models=models, updated_at=datetime.now(UTC), updated_by=actor)
        new_generation = await self._bucket(
            "write desired state",
            lambda: gcs.write_object(
                self.client,
                self.bucket,
                self.state_object,
                new_document.to_json().encode(),
                if_generation_match=generation,
                timeout=self.timeout,
            ),
        )
        entry = AuditEntry(
            actor=actor,
            action=action,
            model=model,
            before=before,
            after=None if after.is_default() else after,
            generation=new_generation,
            serving_before=resolve_model(base, complete).serve,
        )
        audit_object = await self._append_audit(entry)
        self._scan_cache = None
        logger.info(
            "desired state changed: %s %s by %s",
            action,
            model,
            actor,
            extra={"model": model, "generation": new_generation, "actor": actor},
        )
        return ChangeResult(
            model=model_info(model, model_scan, new_document),
            generation=new_generation,
            changed=True,
            audit_object=audit_object,
        )

    def _check_complete(self, model: str, versions: set[int], scan: ModelScan | None) -> None:
        complete = set(scan.complete_versions) if scan else set()
        missing = sorted(versions - complete)
        if not missing:
            return
        incomplete = scan.incomplete if scan else {}
        reasons = {str(v): incomplete.get(v, "not in the bucket") for v in missing}
        listed = ", ".join(map(str, missing))
        raise InvalidInput(f"{model}: version(s) {listed} not complete in the bucket", model=model, versions=reasons)

    async def _append_audit(self, entry: AuditEntry) -> str | None:
        name = self.audit_prefix + entry.object_name()
        data = entry.to_json().encode()
        for attempt in range(1, AUDIT_WRITE_ATTEMPTS + 1):
            try:
                await self._bucket(
                    "write audit entry",
                    lambda: gcs.write_object(
                        self.client, self.bucket, name, data, if_generation_match=0, timeout=self.timeout
                    ),
                )
                return name
            except BucketError as exc:
                logger.warning("audit write attempt %s failed: %s", attempt, exc.detail, extra={"model": entry.model})
                await asyncio.sleep(0.2 * attempt)
        logger.error("audit entry lost after %s attempts", AUDIT_WRITE_ATTEMPTS, extra={"model": entry.model})
        return None

    async def audit(self, *, limit: int, model: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries (of one model if given), newest first."""

        def listing() -> list[str]:
            objects = gcs.list_objects(self.client, self.bucket, self.audit_prefix, timeout=self.timeout)
            return sorted(o.name for o in objects)

        names = await self._bucket("list audit log", listing)
        if model is not None:
            names = [n for n in names if audit_model(n[len(self.audit_prefix) :]) == model]
        chosen = list(reversed(names))[:limit]
        found = await asyncio.gather(*(self._read_audit(n) for n in chosen))
        return [entry for entry in found if entry is not None]

    async def _read_audit(self, name: str) -> AuditEntry | None:
        found = await self._bucket(
            f"read {name}", lambda: gcs.read_object(self.client, self.bucket, name, timeout=self.timeout)
        )
        if found is None:
            return None
        try:
            return AuditEntry.from_json(found[0])
        except ValidationError:
            logger.warning("unreadable audit entry %s", name)
            return None


def audit_model(object_name: str) -> str | None:
    """The model of an audit object named ``<stamp>-<model>-<generation>.json`` (stamp has fixed width)."""
    stem = object_name.removesuffix(".json")
    stamp_width = len("20250101T000000.000000Z")
    if len(stem) <= stamp_width + 2 or stem[stamp_width] != "-":
        return None
    rest = stem[stamp_width + 1 :]
    model, _, generation = rest.rpartition("-")
    return model if model and generation.isdigit() else None
