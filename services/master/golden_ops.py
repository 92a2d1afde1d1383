"""Golden requests through master (``/v1/golden``, ``fleetctl golden``): list, read, upload, remove, test.

A set lives at ``<prefix>_fleet/golden/<model>.json`` (services/common/contracts/golden.py); only master
writes it, each write guarded by the object's generation (If-Match, 0 = create) and audited like every
change of the desired state. An upload is validated against the model's current version: the version it
serves under its policy (the highest one), whose ``saved_model.pb`` is read from the bucket by ranges —
only the signature map is fetched, whatever the size of the graph. Every request must fit a signature of
that version (inputs, dtypes, shapes) and every output it checks must exist there.

``test`` asks every node's config_manager (or one node's) to run the bucket's set against the version it
serves now (``POST /v1/golden/test``); nothing changes on the nodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from services.common import gcs
from services.common.contracts import AuditEntry, ModelPolicy, resolve_model
from services.common.contracts.golden import GOLDEN_PREFIX, GoldenSet, golden_object_name
from services.common.errors import BucketError, BucketNotFound, InvalidInput, NotFound, PreconditionFailed, Unavailable
from services.common.golden import build_request
from services.common.tfs.records import SignatureSpec
from services.common.tfs.rest_json import signature_for
from services.common.tfs.savedmodel import SavedModelUnreadable, signatures_from_stream
from services.master.desired import DesiredStore
from services.master.registry import SidecarRecord
from services.master.wire import SidecarClient, WireError

logger = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024  # range size when walking saved_model.pb in the bucket
TEST_PATH = "/v1/golden/test"


class GoldenSummary(BaseModel):
    model: str
    generation: int
    requests: int
    digest: str
    updated_at: datetime | None = None
    updated_by: str | None = None


class GoldenList(BaseModel):
    sets: list[GoldenSummary]


class GoldenChange(BaseModel):
    """Outcome of an upload or a removal (``generation`` 0 = removed)."""

    model: str
    generation: int
    digest: str | None = None
    requests: int = 0
    validated_against: int | None = Field(default=None, description="the version whose signatures it fits")
    audit_object: str | None = None


class NodeGoldenTest(BaseModel):
    hostname: str
    ok: bool = Field(description="the node answered and every request passed")
    status_code: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = Field(default=None, description="the node's verdicts")


class GoldenTestResult(BaseModel):
    model: str
    digest: str
    passed: bool = Field(description="every node tested answered and passed")
    nodes: list[NodeGoldenTest]


def summary(golden: GoldenSet, generation: int) -> GoldenSummary:
    return GoldenSummary(
        model=golden.model,
        generation=generation,
        requests=len(golden.requests),
        digest=golden.digest(),
        updated_at=golden.updated_at,
        updated_by=golden.updated_by,
    )


def _object(store: DesiredStore, model: str) -> str:
    return golden_object_name(store.prefix, model)


async def read_golden(store: DesiredStore, model: str) -> tuple[GoldenSet, int]:
    """The model's set and its generation (404 when it has none)."""
    name = _object(store, model)
    found = await store.bucket_call(
        f"read golden set of {model}", lambda: gcs.read_object(store.client, store.bucket, name, timeout=store.timeout)
    )
    if found is None:
        raise NotFound(f"model {model!r} has no golden set", model=model)
    data, generation = found
    try:
        return GoldenSet.from_json(data), generation
    except ValidationError as exc:
        raise BucketError(f"gs://{store.bucket}/{name} is not a valid golden set: {exc.errors()[0]['msg']}") from exc


async def list_golden(store: DesiredStore) -> GoldenList:
    """Every model's set (an unreadable one is logged and left out)."""
    prefix = store.prefix + GOLDEN_PREFIX
    objects = await store.bucket_call(
        "list golden sets", lambda: list(gcs.list_objects(store.client, store.bucket, prefix, timeout=store.timeout))
    )
    models = [o.name[len(prefix) :].removesuffix(".json") for o in objects if o.name.endswith(".json")]
    found = await asyncio.gather(*(read_golden(store, m) for m in models), return_exceptions=True)
    sets = []
    for model, item in zip(models, found, strict=True):
        if isinstance(item, BaseException):
            logger.warning("golden set of %s left out of the list: %s", model, item, extra={"model": model})
            continue
        sets.append(summary(*item))
    return GoldenList(sets=sorted(sets, key=lambda s: s.model))


async def current_version(store: DesiredStore, model: str) -> int:
    """The version a golden set is validated against: the highest one the model's policy serves now."""
    (document, _), scan = await asyncio.gather(store.read_state(), store.scan(model, fresh=True))
    found = scan.models.get(model)
    complete = found.complete_versions if found else []
    served = resolve_model(document.models.get(model) or ModelPolicy(), complete).serve
    if not served:
        raise InvalidInput(
            f"model {model!r} has no complete version in the bucket to check the golden set against",
            model=model,
        )
    return max(served)


async def read_signatures(store: DesiredStore, model: str, version: int) -> dict[str, SignatureSpec]:
    """The serving signatures of ``model/version/saved_model.pb`` in the bucket, read by ranges."""
    name = f"{store.prefix}{model}/{version}/saved_model.pb"

    def read() -> dict[str, SignatureSpec]:
        blob = store.client.bucket(store.bucket).blob(name)
        with blob.open("rb", chunk_size=READ_CHUNK, timeout=store.timeout) as stream:
            return signatures_from_stream(stream, f"gs://{store.bucket}/{name}")

    try:
        return await store.bucket_call(f"read signatures of {model} version {version}", lambda: gcs.call(name, read))
    except BucketNotFound as exc:
        raise InvalidInput(
            f"cannot check the golden set: version {version} of {model} has no saved_model.pb in the bucket",
            model=model,
        ) from exc
    except SavedModelUnreadable as exc:
        raise InvalidInput(
            f"cannot check the golden set: version {version} of {model} has no readable saved_model.pb ({exc})",
            model=model,
        ) from exc


def misfits(golden: GoldenSet, signatures: dict[str, SignatureSpec]) -> list[str]:
    """Why requests do not fit ``signatures`` (inputs, shapes, dtypes, checked outputs); empty = all fit."""
    problems = []
    for item in golden.requests:
        try:
            build_request(item, signatures)
            key, spec = signature_for(signatures, item.signature)
        except InvalidInput as exc:
            problems.append(f"{item.name}: {exc.detail}")
            continue
        unknown = sorted(set(item.checks.outputs) - set(spec.outputs))
        if unknown:
            problems.append(f"{item.name}: signature {key!r} has no output(s) {unknown} (has {sorted(spec.outputs)})")
    return problems


async def put_golden(
    store: DesiredStore, model: str, golden: GoldenSet, *, actor: str, if_match: int | None
) -> GoldenChange:
    """Validate ``golden`` against the model's current version, then write it (If-Match: the generation
    read before, 0 = create only, None = whatever is there) and audit it."""
    if golden.model != model:
        raise InvalidInput(f"the body is the golden set of {golden.model!r}, not {model!r}", model=model)
    if not golden.requests:
        raise InvalidInput("a golden set needs at least one request (remove the set instead)", model=model)
    if if_match is not None and if_match < 0:
        raise PreconditionFailed(f"If-Match does not name a generation of the golden set of {model}")
    version = await current_version(store, model)
    problems = misfits(golden, await read_signatures(store, model, version))
    if problems:
        raise InvalidInput(
            f"{len(problems)} golden request(s) do not fit version {version} of {model}: " + "; ".join(problems),
            model=model,
            version=version,
            problems=problems,
        )
    stamped = golden.model_copy(update={"updated_at": datetime.now(UTC), "updated_by": actor})
    data = stamped.to_json().encode()
    name = _object(store, model)
    digest = stamped.digest()

    def write() -> int:
        return gcs.write_object(
            store.client, store.bucket, name, data, if_generation_match=if_match, timeout=store.timeout
        )

    def entry(generation: int) -> AuditEntry:
        action = f"golden set ({len(golden.requests)} requests, digest {digest}, fits version {version})"
        return AuditEntry(actor=actor, action=action, model=model, generation=generation)

    generation, audit_object = await store.audited(f"write golden set of {model}", write, entry)
    logger.info(
        "golden set of %s written by %s: %s requests, digest %s",
        model,
        actor,
        len(golden.requests),
        digest,
        extra={"model": model, "actor": actor, "generation": generation},
    )
    return GoldenChange(
        model=model,
        generation=generation,
        digest=digest,
        requests=len(golden.requests),
        validated_against=version,
        audit_object=audit_object,
    )


async def delete_golden(store: DesiredStore, model: str, *, actor: str, if_match: int | None) -> GoldenChange:
    """Remove the model's set (its versions then take traffic unchecked, as without one) and audit it."""
    _, generation = await read_golden(store, model)
    if if_match is not None and if_match != generation:
        raise PreconditionFailed(
            f"the golden set of {model} is at generation {generation}, not {if_match}: re-read and retry",
            current_generation=generation,
        )
    name = _object(store, model)

    def delete() -> int:
        gcs.delete_object(store.client, store.bucket, name, if_generation_match=generation, timeout=store.timeout)
        return 0

    def entry(_: int) -> AuditEntry:
        return AuditEntry(actor=actor, action=f"golden remove (generation {generation})", model=model, generation=0)

    _, audit_object = await store.audited(f"remove golden set of {model}", delete, entry)
    logger.info("golden set of %s removed by %s", model, actor, extra={"model": model, "actor": actor})
    return GoldenChange(model=model, generation=0, audit_object=audit_object)


async def test_golden(
    store: DesiredStore,
    model: str,
    records: list[SidecarRecord],
    client: SidecarClient,
    *,
    deadline: float,
) -> GoldenTestResult:
    """Run the bucket's set on the config_managers of ``records`` against what each serves now."""
    golden, _ = await read_golden(store, model)
    chosen = [r for r in records if r.role == "config_manager"]
    if not chosen:
        raise Unavailable("no config_manager is registered to run the golden set", retry_after=10)
    body = json.dumps({"model": model, "golden": json.loads(golden.to_json())}).encode()
    nodes = await asyncio.gather(*(_test_on(r, body, client, deadline) for r in chosen))
    return GoldenTestResult(
        model=model,
        digest=golden.digest(),
        passed=all(n.ok for n in nodes),
        nodes=sorted(nodes, key=lambda n: n.hostname),
    )


async def _test_on(record: SidecarRecord, body: bytes, client: SidecarClient, deadline: float) -> NodeGoldenTest:
    began = time.monotonic()
    try:
        response = await asyncio.wait_for(client.request("POST", record.base_url + TEST_PATH, json_body=body), deadline)
    except TimeoutError:
        return NodeGoldenTest(hostname=record.hostname, ok=False, error=f"no answer within {deadline:g}s")
    except WireError as exc:
        return NodeGoldenTest(hostname=record.hostname, ok=False, error=str(exc))
    try:
        answer = json.loads(response.body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = None
    if response.status != 200 or answer is None:
        detail = (answer or {}).get("detail") if answer else None
        return NodeGoldenTest(
            hostname=record.hostname,
            ok=False,
            status_code=response.status,
            error=str(detail or f"HTTP {response.status}"),
        )
    logger.debug("golden test on %s took %.2fs", record.hostname, time.monotonic() - began)
    return NodeGoldenTest(
        hostname=record.hostname, ok=bool(answer.get("passed")), status_code=response.status, result=answer
    )
