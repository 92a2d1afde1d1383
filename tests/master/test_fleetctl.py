"""fleetctl against a real master (uvicorn), a real bucket and stand-in sidecars."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import storage

from tests.master.conftest import MasterHandle, register
from tests.master.support import ADMIN_TOKENS, READ_TOKEN, StandInSidecar, fleetctl, free_port, node_model, put_version


@pytest.fixture
def fleet(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> tuple[MasterHandle, dict[str, StandInSidecar]]:
    put_version(bucket, "ranker", 1)
    put_version(bucket, "ranker", 2)
    master = start_master(poll_interval_seconds=3)
    wanted = {"ranker": node_model([2], remote_complete=[1, 2], on_disk=[1, 2])}
    nodes = {
        "node-1/puller": sidecars("node-1", "puller", models=wanted),
        "node-1/config_manager": sidecars(
            "node-1", "config_manager", models={"ranker": node_model([2], [2], config_labels={})}
        ),
        "node-2/puller": sidecars("node-2", "puller", models=wanted),
        "node-2/config_manager": sidecars(
            "node-2",
            "config_manager",
            models={"ranker": node_model([2], [1], failed={"2": "Failed to load: corrupt variables"})},
        ),
    }
    with master.client() as client:
        register(client, *nodes.values())
        client.get("/v1/cluster", params={"refresh": "true"})
    return master, nodes


def test_status_models_and_nodes_show_the_fleet(fleet: tuple[MasterHandle, dict[str, StandInSidecar]]) -> None:
    master, _ = fleet
    code, out = fleetctl(master, "status")
    assert code == 0, out
    assert "NOT converged" in out and "2/2 nodes healthy" in out
    assert "node-2" in out and "Failed to load: corrupt variables" in out
    code, out = fleetctl(master, "--json", "status")
    cluster = json.loads(out)
    assert cluster["models"]["ranker"]["available_by_node"] == {"node-1": [2], "node-2": [1]}
    code, out = fleetctl(master, "models")
    assert code == 0 and "ranker" in out and "default" in out
    code, out = fleetctl(master, "--json", "nodes")
    assert code == 0 and [n["hostname"] for n in json.loads(out)["nodes"]] == ["node-1", "node-2"]


def test_pin_label_rollback_retire_round_trip_and_audit(
    fleet: tuple[MasterHandle, dict[str, StandInSidecar]], bucket: storage.Bucket
) -> None:
    master, _ = fleet
    code, out = fleetctl(master, "pin", "1")  # the only model is inferred
    assert code == 0, out
    assert "ranker: serve 1" in out
    code, out = fleetctl(master, "label", "stable", "1")
    assert code == 0 and "stable=1" in out
    code, out = fleetctl(master, "label", "ranker", "canary", "5")
    assert code == 1 and "not complete in the bucket" in out
    code, out = fleetctl(master, "unpin", "ranker")
    assert code == 0 and "serve 1,2" in out  # latest (2) + the label target (1)
    code, out = fleetctl(master, "label", "stable", "--remove")
    assert code == 0 and "serve 2" in out
    code, out = fleetctl(master, "rollback")
    assert code == 0 and "serve 1" in out
    code, out = fleetctl(master, "retire", "ranker")
    assert code == 0 and "serve -" in out
    code, out = fleetctl(master, "--json", "audit", "--model", "ranker")
    actions = [e["action"] for e in json.loads(out)["entries"]]
    assert actions == ["set-policy", "rollback", "unlabel stable", "set-policy", "label stable=1", "set-policy"]
    assert {e["actor"] for e in json.loads(out)["entries"]} == {"alice"}
    state = json.loads(bucket.blob("models/_fleet/state.json").download_as_bytes())
    assert state["models"]["ranker"]["enabled"] is False and state["updated_by"] == "alice"


def test_diff_shows_what_a_sync_would_change(fleet: tuple[MasterHandle, dict[str, StandInSidecar]]) -> None:
    master, _ = fleet
    code, out = fleetctl(master, "--json", "diff")
    assert code == 0, out
    rows = {(r["node"], r["model"]): r for r in json.loads(out)}
    assert list(rows) == [("node-2", "ranker")]  # node-1 already serves what it should
    # node-2 wants 2 but 2 failed to load there: blocked, not loaded; 1 stays until 2 is AVAILABLE.
    assert rows["node-2", "ranker"]["load"] == [] and rows["node-2", "ranker"]["blocked"] == [2]
    assert rows["node-2", "ranker"]["unload"] == []
    assert fleetctl(master, "pin", "ranker", "1")[0] == 0
    code, out = fleetctl(master, "diff")
    assert code == 0 and "what a sync now would change" in out
    rows = {(r["node"], r["model"]): r for r in json.loads(fleetctl(master, "--json", "diff")[1])}
    assert rows["node-1", "ranker"]["load"] == [1] and rows["node-1", "ranker"]["unload"] == [2]
    assert "node-2" not in {node for node, _ in rows}  # node-2 already has exactly 1 AVAILABLE


def test_token_file_names_the_actor(fleet: tuple[MasterHandle, dict[str, StandInSidecar]], tmp_path: Path) -> None:
    master, _ = fleet
    token_file = tmp_path / "bob.token"
    token_file.write_text(ADMIN_TOKENS["bob"] + "\n")
    code, out = fleetctl(master, "--token-file", str(token_file), "label", "stable", "2", token=None)
    assert code == 0, out
    code, out = fleetctl(master, "--json", "--token-file", str(token_file), "audit", token=None)
    assert [e["actor"] for e in json.loads(out)["entries"]] == ["bob"]


def test_sync_and_gc_and_readable_errors(fleet: tuple[MasterHandle, dict[str, StandInSidecar]]) -> None:
    master, nodes = fleet
    code, out = fleetctl(master, "sync")
    assert code == 0, out
    assert "2/2 nodes ok" in out and nodes["node-1/puller"].calls == ["sync"]
    code, out = fleetctl(master, "gc", "node-1")
    assert code == 0 and nodes["node-1/config_manager"].calls == ["sync", "gc"]
    nodes["node-2/puller"].mode = "error"
    with master.client() as client:
        for _ in range(3):
            client.get("/v1/cluster", params={"refresh": "true"})
    code, out = fleetctl(master, "sync", "node-2")
    assert code == 1 and "node node-2 is unhealthy, retry in 3 s" in out
    code, out = fleetctl(master, "sync")
    assert code == 1 and "sync failed on 1 node(s): node-2" in out
    code, out = fleetctl(master, "sync", "node-9")
    assert code == 1 and "404" in out and "node-9" in out
    code, out = fleetctl(master, "sync", token=None)
    assert code == 1 and "401" in out and "FLEETCTL_TOKEN" in out
    code, out = fleetctl(master, "pin", "1", token="wrong")
    assert code == 1 and "401" in out
    code, out = fleetctl(master, "pin", "1", token=READ_TOKEN)
    assert code == 1 and "403" in out and "admin token" in out
    code, out = fleetctl(master, "status", token=READ_TOKEN)
    assert code == 0, out
    code, out = fleetctl(f"http://127.0.0.1:{free_port()}", "status")
    assert code == 2 and "cannot reach master" in out


def test_a_model_gone_from_the_bucket_that_nodes_serve_can_be_retired(
    fleet: tuple[MasterHandle, dict[str, StandInSidecar]], bucket: storage.Bucket
) -> None:
    master, nodes = fleet
    code, out = fleetctl(master, "retire", "legacy")
    assert code == 1 and "404" in out  # neither in the bucket nor served anywhere
    nodes["node-1/config_manager"].models["legacy"] = node_model([3], [3])
    with master.client() as client:
        client.get("/v1/cluster", params={"refresh": "true"})
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["legacy"]["in_bucket"] is False and listed["legacy"]["complete_versions"] == []
    code, out = fleetctl(master, "retire", "legacy")
    assert code == 0, out
    state = json.loads(bucket.blob("models/_fleet/state.json").download_as_bytes())
    assert state["models"]["legacy"]["enabled"] is False
    code, out = fleetctl(master, "pin", "legacy", "3")
    assert code == 1 and "422" in out  # nothing to pin: version 3 is not in the bucket
