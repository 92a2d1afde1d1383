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
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.cloud import storage
from pydantic import BaseModel, Field, ValidationError

from services.common import gcs
from services.common.completeness import BucketScan, ModelScan, scan_listing
from services.common.contracts import AuditEntry, DesiredStateDocument, ModelPolicy, ResolvedModel, resolve_model
from services.common.errors import BucketError, Conflict, InvalidInput, NotFound, PreconditionFailed
from services.master.audit_log import AuditLog
from services.master.settings import Settings
from services.master.state_guard import StateGuard

logger = logging.getLogger(__name__)

T = TypeVar("T")
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

    def __init__(self, client: storage.Client, settings: Settings, guard: StateGuard) -> None:
        self.client = client
        self.guard = guard
        self.bucket = settings.bucket_name
        self.prefix = settings.prefix
        self.timeout = min(settings.gcs_timeout_seconds, settings.bucket_deadline_seconds)
        self.deadline = settings.bucket_deadline_seconds
        self.quiet_period = timedelta(seconds=settings.quiet_period_seconds)
        self.marker = settings.complete_marker
        self.cache_seconds = settings.bucket_cache_seconds
        self._scan_cache: tuple[float, BucketScan] | None = None
        self._executor = ThreadPoolExecutor(max_workers=BUCKET_THREADS, thread_name_prefix="bucket")
        self._writes: set[asyncio.Future[tuple[int, str | None]]] = set()
        self.audit_log = AuditLog(
            client=client,
            bucket=self.bucket,
            prefix=self.audit_prefix,
            timeout=self.timeout,
            bucket_call=self.bucket_call,
        )

    def close(self) -> None:
        """Stop the bucket threads (calls still stuck in client retries are abandoned, not awaited)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def state_object(self) -> str:
        return self.prefix + gcs.STATE_OBJECT

    @property
    def audit_prefix(self) -> str:
        return self.prefix + gcs.AUDIT_PREFIX

    async def bucket_call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a blocking bucket call with an overall deadline (the client's own retries included)."""
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self._executor, fn), self.deadline)
        except TimeoutError:
            raise BucketError(f"{what}: no answer within {self.deadline:g}s") from None

    async def read_state(self) -> tuple[DesiredStateDocument, int]:
        """The document that rules and the bucket's generation (0 = no object). Once a generation has been
        seen, a missing or reset document does not rule: the last good one does, and ``guard.alarm`` says
        why (services/master/state_guard.py)."""
        epoch = self.guard.epoch
        found, generation = await self.read_bucket_state()
        return self.guard.judge(found, generation, read_epoch=epoch), generation

    async def read_bucket_state(self) -> tuple[DesiredStateDocument | None, int]:
        """What the bucket holds now (None, 0 = no object), unjudged."""
        found = await self.bucket_call(
            "read desired state",
            lambda: gcs.read_object(self.client, self.bucket, self.state_object, timeout=self.timeout),
        )
        if found is None:
            return None, 0
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

        result = await self.bucket_call(f"list gs://{self.bucket}/{prefix}", listing)
        if model is None:
            self._scan_cache = (time.monotonic(), result)
        return result

    async def list_models(self, *, served: Collection[str] = ()) -> tuple[list[ModelInfo], int]:
        """Bucket models (and models only in the document, or only on nodes: ``served``) with their
        effective policy; plus the generation."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan())
        names = sorted(set(scan.models) | set(document.models) | set(served))
        return [model_info(n, scan.models.get(n), document) for n in names], generation

    async def get_model(self, name: str, *, served: Collection[str] = ()) -> tuple[ModelInfo, int]:
        """One model (404 when neither in the bucket, nor in the document, nor ``served`` by a node)."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan(name, fresh=True))
        if name not in scan.models and name not in document.models and name not in served:
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
        served: Collection[str] = (),
        reason: str | None = None,
    ) -> ChangeResult:
        """Read-modify-write one model's entry with a generation precondition, then append an audit entry.
        A model only ``served`` by nodes (gone from the bucket) may change too (to retire it)."""
        (document, generation), scan = await asyncio.gather(self.read_state(), self.scan(model, fresh=True))
        if self.guard.alarm is not None:
            raise Conflict(f"no change while the state document is in alarm: {self.guard.alarm.message}")
        if if_match is not None and if_match != generation:
            raise PreconditionFailed(
                f"the desired state is at generation {generation}, not {if_match}: re-read and retry",
                current_generation=generation,
            )
        model_scan = scan.models.get(model)
        if model_scan is None and model not in document.models and model not in served:
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
        new_document = DesiredStateDocument(
            models=models, revision=self.guard.next_revision, updated_at=datetime.now(UTC), updated_by=actor
        )

        def audit_entry(new_generation: int) -> AuditEntry:
            return AuditEntry(
                actor=actor,
                action=action,
                model=model,
                before=before,
                after=None if after.is_default() else after,
                generation=new_generation,
                serving_before=resolve_model(base, complete).serve,
                reason=reason,
            )

        new_generation, audit_object = await self.write_state(new_document, generation, audit_entry)
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

    async def write_state(
        self, document: DesiredStateDocument, expected_generation: int, audit_entry: Callable[[int], AuditEntry]
    ) -> tuple[int, str | None]:
        """Write the document if the bucket is still at ``expected_generation`` (0 = absent), then its audit
        entry (see :meth:`audited`)."""
        data = document.to_json().encode()

        def write() -> int:
            return gcs.write_object(
                self.client,
                self.bucket,
                self.state_object,
                data,
                if_generation_match=expected_generation,
                timeout=self.timeout,
            )

        return await self.audited(
            "write desired state", write, audit_entry, landed=lambda generation: self.guard.accept(document, generation)
        )

    async def audited(
        self,
        what: str,
        change: Callable[[], int],
        audit_entry: Callable[[int], AuditEntry],
        *,
        landed: Callable[[int], None] | None = None,
    ) -> tuple[int, str | None]:
        """Run one blocking bucket change (returning the object's new generation, 0 once deleted), then
        append its audit entry. The change runs on its own (shielded from the request): when it lands after
        the deadline (or the caller gave up), its audit entry is still written, by a tracked follow-up task."""
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._executor, change)
        finish = asyncio.ensure_future(self._landed(write, audit_entry, landed))
        self._writes.add(finish)
        finish.add_done_callback(self._write_done)
        try:
            return await asyncio.wait_for(asyncio.shield(finish), self.deadline)
        except TimeoutError:
            raise BucketError(
                f"{what}: no answer within {self.deadline:g}s; it may still land (its audit entry follows): "
                "re-read before retrying"
            ) from None

    def _write_done(self, finish: asyncio.Future[tuple[int, str | None]]) -> None:
        self._writes.discard(finish)
        if not finish.cancelled() and finish.exception() is not None:
            logger.warning("bucket change did not land: %s", finish.exception())

    async def _landed(
        self,
        write: asyncio.Future[int],
        audit_entry: Callable[[int], AuditEntry],
        landed: Callable[[int], None] | None,
    ) -> tuple[int, str | None]:
        generation = await write
        if landed is not None:
            landed(generation)
        return generation, await self._append_audit(audit_entry(generation))

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let writes that already started finish with their audit entries (bounded), then stop the threads."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout)
        self.close()

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
        return await self.audit_log.append(entry)

    async def audit(self, *, limit: int, model: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries (of one model if given), newest first."""
        return await self.audit_log.newest(limit=limit, model=model)
