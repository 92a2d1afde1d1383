"""Contracts round-trip, and an old reader accepts a newer document with unknown fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.common.atomic import atomic_write_json
from services.common.contracts import (
    AuditEntry,
    DesiredStateDocument,
    FailedDocument,
    FailedVersion,
    LocalDesired,
    LocalModelTarget,
    Manifest,
    ManifestObject,
    ModelNodeStatus,
    ModelPolicy,
    Registration,
    SidecarStatus,
    resolve_model,
)

DOCS = [
    DesiredStateDocument(models={"ranker": ModelPolicy(pinned=[3], labels={"stable": 3}, keep=2)}),
    LocalDesired(models={"ranker": LocalModelTarget(serve=[3], keep=[2], labels={"stable": 3})}, generation=17),
    Manifest(
        model="ranker",
        version=3,
        objects=[ManifestObject(name="saved_model.pb", size=5, crc32c="AAAAAA==", generation=9)],
        total_bytes=5,
    ),
    FailedDocument(versions=[FailedVersion(model="ranker", version=4, message="boom", fingerprint="abc")]),
    Registration(hostname="node-1", role="puller", base_url="http://node-1:8001"),
    SidecarStatus(
        hostname="node-1", role="config_manager", models={"ranker": ModelNodeStatus(serve=[3], available=[3])}
    ),
    AuditEntry(actor="alice", action="pin", model="ranker", before=None, after=ModelPolicy(pinned=[3])),
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: type(d).__name__)
def test_round_trip_through_a_file(doc, tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    atomic_write_json(path, doc)
    assert type(doc).read(path) == doc


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: type(d).__name__)
def test_old_reader_accepts_newer_document(doc) -> None:
    data = json.loads(doc.to_json())
    data["schema_version"] = 99
    data["field_from_the_future"] = {"anything": [1, 2]}
    parsed = type(doc).model_validate(data)
    assert parsed.model_dump(exclude={"schema_version"}) == doc.model_dump(exclude={"schema_version"})


def test_policy_rules_are_validated() -> None:
    with pytest.raises(ValidationError):
        ModelPolicy(pinned=[1], latest=2)
    with pytest.raises(ValidationError):
        ModelPolicy(pinned=[])
    with pytest.raises(ValidationError):
        ModelPolicy(labels={"9lives": 1})
    with pytest.raises(ValidationError):
        DesiredStateDocument(models={"../etc": ModelPolicy()})
    with pytest.raises(ValidationError):
        Registration(hostname="node 1", role="puller", base_url="http://x")


def test_default_policy_serves_latest_and_keeps_one_before() -> None:
    resolved = resolve_model(ModelPolicy(), [1, 2, 3, 5])
    assert (resolved.serve, resolved.keep) == ([5], [3, 5])


def test_retired_model_serves_and_keeps_nothing() -> None:
    resolved = resolve_model(ModelPolicy(enabled=False), [1, 2])
    assert (resolved.serve, resolved.keep, resolved.enabled) == ([], [], False)


def test_labels_are_served_and_pins_wait_for_incomplete_versions() -> None:
    resolved = resolve_model(ModelPolicy(labels={"stable": 2}), [1, 2, 3])
    assert resolved.serve == [2, 3] and resolved.labels == {"stable": 2} and resolved.keep == [1, 2, 3]
    pinned = resolve_model(ModelPolicy(pinned=[2, 7]), [1, 2, 3])
    assert pinned.serve == [2] and pinned.waiting_for == [7]


@given(
    complete=st.sets(st.integers(0, 50), max_size=10),
    latest=st.one_of(st.none(), st.integers(1, 4)),
    keep=st.one_of(st.none(), st.integers(0, 4)),
)
def test_keep_is_always_a_superset_of_serve(complete: set[int], latest: int | None, keep: int | None) -> None:
    resolved = resolve_model(ModelPolicy(latest=latest, keep=keep), sorted(complete))
    assert set(resolved.serve) <= set(resolved.keep) <= complete
    assert len(resolved.serve) == min(len(complete), latest or 1)
    if complete:
        assert max(complete) in resolved.serve


def test_manifest_fingerprint_changes_with_generations_only() -> None:
    a = DOCS[2]
    assert isinstance(a, Manifest)
    same = a.model_copy(update={"installed_at": a.installed_at.replace(year=2000)})
    changed = a.model_copy(update={"objects": [a.objects[0].model_copy(update={"generation": 10})]})
    assert a.fingerprint() == same.fingerprint() != changed.fingerprint()
