"""The rollouts API in-process (no nodes): the fleet default policy, 428/404/409, fields master keeps."""

from __future__ import annotations

import json
from collections.abc import Callable

from google.cloud import storage

from tests.master.conftest import ADMIN, MasterHandle
from tests.master.support import put_version


def test_fleet_default_policy_commands_and_master_written_fields(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "ranker", 1)
    master = start_master()
    with master.client(headers=ADMIN) as client:
        current = client.get("/v1/rollout-policy")
        assert current.json() == {"generation": 0, "rollout": None}
        body = {"rollout": {"waves": [1, "25%", "100%"], "bake_seconds": 30}}
        assert client.put("/v1/rollout-policy", json=body).status_code == 428
        assert (
            client.put("/v1/rollout-policy", json={"rollout": {"waves": ["0%"]}}, headers={"If-Match": "*"}).status_code
            == 422
        )
        written = client.put("/v1/rollout-policy", json=body, headers={"If-Match": current.headers["etag"]})
        assert written.status_code == 200, written.text
        assert written.json()["rollout"]["bake_seconds"] == 30
        document = json.loads(bucket.blob("models/_fleet/state.json").download_as_bytes())
        assert document["rollout"]["waves"] == [1, "25%", "100%"]
        audit = client.get("/v1/audit").json()["entries"]
        assert [e["action"] for e in audit if e["model"] == "_rollout"] == ["rollout default set"]

        assert client.get("/v1/rollouts").json()["rollouts"] == []
        assert client.get("/v1/rollouts/ranker").status_code == 404
        etag = client.get("/v1/models/ranker").headers["etag"]
        assert client.post("/v1/rollouts/ranker/pause").status_code == 428
        assert client.post("/v1/rollouts/ranker/pause", headers={"If-Match": etag}).status_code == 404
        assert client.post("/v1/rollouts/ranker/jump", headers={"If-Match": etag}).status_code == 422

        # A version marked bad stays marked when an operator edits the policy without naming it.
        marked = client.put("/v1/models/ranker", json={"bad_versions": [1], "keep": 2}, headers={"If-Match": etag})
        assert marked.status_code == 200, marked.text
        edited = client.put("/v1/models/ranker", json={"keep": 3}, headers={"If-Match": marked.headers["etag"]})
        assert edited.json()["model"]["overrides"]["bad_versions"] == [1]
        assert edited.json()["model"]["effective"]["serve"] == []
