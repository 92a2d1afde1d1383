"""Desired state in the bucket: models API, ETag/If-Match, completeness refusals, audit, rollback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
from google.cloud import storage

from tests.master.conftest import ADMIN, MasterHandle
from tests.master.support import ADMIN_TOKENS, put_version

BOB = {"Authorization": f"Bearer {ADMIN_TOKENS['bob']}"}


def state_document(bucket: storage.Bucket) -> dict:
    return json.loads(bucket.blob("models/_fleet/state.json").download_as_bytes())


def audit_objects(bucket: storage.Bucket) -> list[str]:
    return sorted(b.name for b in bucket.list_blobs(prefix="models/_fleet/audit/"))


def publish(bucket: storage.Bucket) -> None:
    put_version(bucket, "ranker", 1)
    put_version(bucket, "ranker", 2)
    put_version(bucket, "ranker", 3, complete=False)  # variables.index without its data shard


def test_models_list_complete_versions_and_the_default_policy(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    put_version(bucket, "embedder", "007")
    master = start_master()
    with master.client() as client:
        listing = client.get("/v1/models")
        assert listing.status_code == 200 and listing.headers["etag"] == '"0"'
        models = {m["name"]: m for m in listing.json()["models"]}
        assert sorted(models) == ["embedder", "ranker"]
        ranker = models["ranker"]
        assert ranker["complete_versions"] == [1, 2] and "3" in ranker["incomplete"]
        assert ranker["effective"]["serve"] == [2] and ranker["effective"]["keep"] == [1, 2]
        assert ranker["overrides"] is None
        assert models["embedder"]["complete_versions"] == [7]
        assert client.get("/v1/models/nope").status_code == 404
        odd_names = ("%2E%2E", "..%2Fetc%2Fpasswd", "x%2F..%2F..%2Fetc", "_fleet", ".hidden", "a%20b", "x" * 200)
        for odd in (*odd_names, "r%C3%A4nker"):
            r = client.get(f"/v1/models/{odd}")
            assert r.status_code == 422, (odd, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"


def test_pin_with_if_match_writes_the_document_and_one_audit_entry(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    master = start_master()
    with master.client() as client:
        etag = client.get("/v1/models/ranker").headers["etag"]
        r = client.put("/v1/models/ranker", json={"pinned": [1]}, headers={"If-Match": etag})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["changed"] is True and body["model"]["effective"]["serve"] == [1]
        assert r.headers["etag"] == f'"{body["generation"]}"' != etag
        assert state_document(bucket)["models"]["ranker"]["pinned"] == [1]
        # Same If-Match again: someone (we) changed it since → 412, nothing written.
        stale = client.put("/v1/models/ranker", json={"pinned": [2]}, headers={"If-Match": etag})
        assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
        assert state_document(bucket)["models"]["ranker"]["pinned"] == [1]
        entries = client.get("/v1/audit").json()["entries"]
        assert len(entries) == 1 and len(audit_objects(bucket)) == 1
        assert entries[0]["actor"] == "alice" and entries[0]["model"] == "ranker"
        assert entries[0]["before"] is None and entries[0]["after"]["pinned"] == [1]
        assert entries[0]["serving_before"] == [2]
        # Same content again: no write, no audit entry.
        again = client.put("/v1/models/ranker", json={"pinned": [1]})
        assert again.status_code == 200 and again.json()["changed"] is False
        assert len(audit_objects(bucket)) == 1


def test_versions_not_complete_in_the_bucket_are_refused(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    master = start_master()
    with master.client() as client:
        r = client.put("/v1/models/ranker", json={"pinned": [3]})
        assert r.status_code == 422
        assert "3" in r.json()["detail"] and "shard" in r.json()["versions"]["3"]
        r = client.put("/v1/models/ranker/labels/stable", json={"version": 9})
        assert r.status_code == 422 and r.json()["versions"] == {"9": "not in the bucket"}
        assert client.put("/v1/models/ranker/labels/1bad", json={"version": 1}).status_code == 422
        assert client.put("/v1/models/ranker", json={"pinned": [1], "latest": 2}).status_code == 422
        assert audit_objects(bucket) == []
        assert bucket.blob("models/_fleet/state.json").exists() is False


async def test_two_concurrent_puts_one_wins_one_gets_412_and_one_audit_entry(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    master = start_master()
    async with master.async_client() as client:
        etag = (await client.get("/v1/models/ranker")).headers["etag"]
        first, second = await asyncio.gather(
            client.put("/v1/models/ranker", json={"pinned": [1]}, headers={**ADMIN, "If-Match": etag}),
            client.put("/v1/models/ranker", json={"pinned": [2]}, headers={**BOB, "If-Match": etag}),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 412]
        winner = first if first.status_code == 200 else second
        entries = (await client.get("/v1/audit", headers=ADMIN)).json()["entries"]
        assert len(entries) == 1 and len(audit_objects(bucket)) == 1
        assert state_document(bucket)["models"]["ranker"]["pinned"] == winner.json()["model"]["overrides"]["pinned"]
        assert entries[0]["after"]["pinned"] == winner.json()["model"]["overrides"]["pinned"]


def test_labels_move_and_go(bucket: storage.Bucket, start_master: Callable[..., MasterHandle]) -> None:
    publish(bucket)
    master = start_master()
    with master.client() as client:
        r = client.put("/v1/models/ranker/labels/stable", json={"version": 1})
        assert r.status_code == 200
        assert r.json()["model"]["effective"]["labels"] == {"stable": 1}
        assert r.json()["model"]["effective"]["serve"] == [1, 2]  # a label target is always served
        r = client.delete("/v1/models/ranker/labels/stable")
        assert r.status_code == 200 and r.json()["model"]["effective"]["labels"] == {}
        assert client.delete("/v1/models/ranker/labels/stable").status_code == 404
        # Back to the default policy: the model's entry leaves the document.
        assert state_document(bucket)["models"] == {}
        actions = [e["action"] for e in client.get("/v1/audit", params={"model": "ranker"}).json()["entries"]]
        assert actions == ["unlabel stable", "label stable=1"]


def test_rollback_goes_to_the_previous_serving_versions(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    master = start_master()
    with master.client() as client:
        # No audit history: default policy serves 2 → rollback pins the previous complete version.
        r = client.post("/v1/models/ranker/rollback")
        assert r.status_code == 200 and r.json()["model"]["effective"]["serve"] == [1]
        assert client.put("/v1/models/ranker", json={"pinned": [2]}).status_code == 200
        put_version(bucket, "ranker", 4)
        assert client.put("/v1/models/ranker", json={"pinned": [4]}).status_code == 200
        # The last serving change was 2 → 4: rollback pins 2.
        r = client.post("/v1/models/ranker/rollback")
        assert r.json()["model"]["effective"]["serve"] == [2]
        # A rollback is audited, so a second one undoes it.
        r = client.post("/v1/models/ranker/rollback")
        assert r.json()["model"]["effective"]["serve"] == [4]
        assert client.post("/v1/models/ghost/rollback").status_code == 404


def test_rollback_with_nothing_older_is_a_conflict(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "solo", 1)
    master = start_master()
    with master.client() as client:
        r = client.post("/v1/models/solo/rollback")
        assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]


def test_retire_keeps_the_model_listed_as_disabled(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    publish(bucket)
    master = start_master()
    with master.client() as client:
        r = client.put("/v1/models/ranker", json={"enabled": False})
        assert r.status_code == 200
        effective = client.get("/v1/models/ranker").json()["effective"]
        assert effective["enabled"] is False and effective["serve"] == []


def test_bucket_briefly_unreachable_is_503_with_retry_after_then_recovers(
    start_master: Callable[..., MasterHandle],
) -> None:
    from tests.support.gcs import FakeGcs

    own = FakeGcs()
    own.start()
    try:
        own.client().create_bucket("flaky")
        master = start_master(
            storage_emulator_host=own.url, remote_model_directory="gs://flaky/models", bucket_deadline_seconds=1.0
        )
        with master.client() as client:
            assert client.get("/v1/models").status_code == 200
            own.stop()
            r = client.get("/v1/models")
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/problem+json"
            assert client.put("/v1/models/ranker", json={"pinned": [1]}).status_code == 503
            assert client.get("/healthz").status_code == 200  # master itself stays up
            own.start()
            own.client().create_bucket("flaky")
            recovered = httpx.get(f"{master.url}/v1/models", headers=ADMIN, timeout=30)
            assert recovered.status_code == 200 and recovered.json()["models"] == []
    finally:
        own.close()
