"""The state document is precious: a missing or reset document raises the alarm (state API, cluster view,
metric, fleetctl) and the last good one rules until an admin restores or accepts; a write that lands after
its deadline still gets its audit entry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.cloud import storage

from services.common import gcs
from services.common.contracts import ModelPolicy
from services.common.errors import BucketError
from services.master.desired import DesiredStore
from services.master.policy_ops import set_policy
from services.master.settings import Settings
from services.master.state_guard import StateGuard
from tests.master.conftest import ADMIN, MasterHandle
from tests.master.support import put_version
from tests.master.test_fleetctl import fleetctl

STATE = "models/_fleet/state.json"


def document(bucket: storage.Bucket) -> dict[str, Any]:
    return json.loads(bucket.blob(STATE).download_as_bytes())  # type: ignore[no-any-return]


def alarm_kind(master: MasterHandle) -> str | None:
    with master.client() as client:
        state = client.get("/v1/state").json()
        cluster = client.get("/v1/cluster").json()
    assert (state["alarm"] or {}).get("kind") == (cluster["state_alarm"] or {}).get("kind")
    return state["alarm"]["kind"] if state["alarm"] else None


def test_missing_or_reset_document_raises_the_alarm_and_the_admin_decides(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "ranker", 1)
    put_version(bucket, "ranker", 2)
    put_version(bucket, "old", 1)
    master = start_master()
    with master.client() as client:
        assert client.put("/v1/models/ranker", json={"pinned": [1]}).status_code == 200
        assert client.put("/v1/models/old", json={"enabled": False}).status_code == 200
        good = document(bucket)
        assert good["revision"] > 0 and alarm_kind(master) is None

        bucket.blob(STATE).delete()
        state = client.get("/v1/state")
        assert state.headers["etag"] == '"0"' and state.json()["alarm"]["kind"] == "desired-state-missing"
        assert state.json()["ruling"]["retired"] == ["old"] and not state.json()["bucket"]["present"]
        assert client.get("/v1/models/ranker").json()["overrides"]["pinned"] == [1], "the last good one rules"
        metrics = client.get("/metrics").text
        assert 'modelfleet_master_state_document_alarm{kind="desired-state-missing"} 1.0' in metrics
        refused = client.put("/v1/models/ranker", json={"pinned": [2]})
        assert refused.status_code == 409 and "alarm" in refused.json()["detail"]
        with master.client(headers=ADMIN) as without_if_match:
            assert without_if_match.post("/v1/state/restore").status_code == 428

    code, out = fleetctl(master, "status")
    assert code == 0 and "STATE DOCUMENT ALARM (desired-state-missing)" in out
    code, out = fleetctl(master, "state", "restore")
    assert code == 0 and "state restore" in out, out
    restored = document(bucket)
    assert restored["models"] == good["models"] and restored["revision"] > good["revision"]
    assert alarm_kind(master) is None

    bucket.blob(STATE).upload_from_string(b'{"schema_version": 1, "models": {}}')  # put back by hand: revision 0
    assert alarm_kind(master) == "desired-state-reset"
    master.stop()
    restarted = start_master(master.settings)  # the last good document is kept in FLEET_STATE_DIR
    assert alarm_kind(restarted) == "desired-state-reset"
    code, out = fleetctl(restarted, "state", "show")
    assert code == 0 and "desired-state-reset" in out
    code, out = fleetctl(restarted, "state", "accept")
    assert code == 0 and "still retired: old" in out, out
    accepted = document(bucket)
    assert accepted["models"] == {"old": good["models"]["old"]} and accepted["revision"] > restored["revision"]
    assert alarm_kind(restarted) is None
    with restarted.client() as client:
        assert client.get("/v1/models/ranker").json()["overrides"] is None
        assert client.post("/v1/state/accept").status_code == 409  # no alarm: nothing to decide
        entries = client.get("/v1/audit", params={"limit": 10}).json()["entries"]
    assert [e["action"] for e in entries[:2]] == ["state accept", "state restore"]


async def test_a_write_landing_after_its_deadline_still_gets_its_audit_entry(
    bucket: storage.Bucket,
    gcs_client: storage.Client,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put_version(bucket, "ranker", 1)
    settings = make_settings(bucket_deadline_seconds=0.5)
    settings.state_dir.mkdir(parents=True)
    write_object = gcs.write_object

    def slow_state_write(client: storage.Client, bucket_name: str, name: str, data: bytes, **kwargs: Any) -> int:
        if name == STATE:
            time.sleep(1.0)  # the bucket answers after the request's deadline
        return write_object(client, bucket_name, name, data, **kwargs)

    monkeypatch.setattr(gcs, "write_object", slow_state_write)
    store = DesiredStore(gcs_client, settings, StateGuard(settings.state_dir))
    with pytest.raises(BucketError, match="may still land"):
        await set_policy(store, "ranker", ModelPolicy(pinned=[1]), actor="alice", if_match=None)
    await store.aclose()  # shutdown waits (bounded) for writes already under way
    assert document(bucket)["models"]["ranker"]["pinned"] == [1]
    entries = [json.loads(b.download_as_bytes()) for b in bucket.list_blobs(prefix="models/_fleet/audit/")]
    assert [(e["actor"], e["after"]["pinned"]) for e in entries] == [("alice", [1])]
