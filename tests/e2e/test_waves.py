"""Issue 16 end to end on 2 nodes: progressive rollout in waves, gates, automatic revert, operator commands.

One fleet for the module (master polls every second and lists the bucket afresh, so waves move without
waiting). Waves are [1 node, 100 %]: node-1, then node-2. ``ranker`` bakes 60 s per wave (the test
promotes), ``scorer`` 2 s (its waves pass on time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.local_fleet.convergence import predict_once, wait_available
from services.local_fleet.fleet import FleetOptions, LocalFleet
from services.local_fleet.savedmodels import write_model
from tests.support.faults import fleetctl, metric_value, wait_for
from tests.support.predict_loop import predicting

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SLOW_BAKE = {"waves": [1, "100%"], "bake_seconds": 60, "min_requests": 20}
FAST_BAKE = {"waves": [1, "100%"], "bake_seconds": 2, "min_requests": 20}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    options = FleetOptions(
        nodes=2,
        sync_interval=2.0,
        quiet_period=1.0,
        master_poll_interval=1.0,
        extra_env={"FLEET_BUCKET_CACHE_SECONDS": "0.5"},
    )
    fleet = LocalFleet(tmp_path_factory.mktemp("waves") / "run", options)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def rollout(fleet: LocalFleet, model: str) -> dict[str, Any] | None:
    with fleet.reader() as client:
        response = client.get(f"/v1/rollouts/{model}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def wait_rollout(
    fleet: LocalFleet, model: str, check: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 90
) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        view = rollout(fleet, model)
        return view if view is not None and check(view) else None

    return wait_for(seen, timeout=timeout, interval=0.5, what=f"{model}: {what}")


def guarded(fleet: LocalFleet, read: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """GET ``read``'s ETag, then the write with If-Match; on 412 read and write again, as an operator reruns a
    command: master's rollout driver writes the same document between our read and our write."""
    with fleet.admin() as client:
        for _ in range(5):
            etag = client.get(read).headers["etag"]
            response = client.request(method, path, json=body, headers={"If-Match": etag})
            if response.status_code != 412:
                return response
    return response


def command(fleet: LocalFleet, model: str, name: str) -> dict[str, Any]:
    with fleet.admin() as client:
        assert client.post(f"/v1/rollouts/{model}/{name}").status_code == 428
    response = guarded(fleet, f"/v1/rollouts/{model}", "POST", f"/v1/rollouts/{model}/{name}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def set_rollout_policy(fleet: LocalFleet, model: str, policy: dict[str, Any]) -> None:
    response = guarded(fleet, f"/v1/models/{model}", "PUT", f"/v1/models/{model}", {"rollout": policy})
    assert response.status_code == 200, response.text


def pinned(fleet: LocalFleet, model: str) -> list[int] | None:
    with fleet.reader() as client:
        overrides = client.get(f"/v1/models/{model}").json()["overrides"] or {}
    return overrides.get("pinned")


def available(fleet: LocalFleet, model: str, versions: list[int], nodes: list[int] | None = None) -> None:
    chosen = [fleet.nodes[i] for i in nodes] if nodes is not None else fleet.nodes
    asyncio.run(wait_available(chosen, model, versions, timeout=90))


def state_is(*states: str, version: int) -> Callable[[dict[str, Any]], bool]:
    return lambda view: view["version"] == version and view["state"] in states


def test_good_versions_in_waves_with_commands_restart_and_two_models(fleet: LocalFleet, models_dir: Path) -> None:
    for model in ("ranker", "scorer"):
        fleet.publish(model, write_model(models_dir / model, 1))
    available(fleet, "ranker", [1])
    available(fleet, "scorer", [1])
    set_rollout_policy(fleet, "ranker", SLOW_BAKE)
    set_rollout_policy(fleet, "scorer", FAST_BAKE)
    wait_for(lambda: pinned(fleet, "ranker") == [1] and pinned(fleet, "scorer") == [1], timeout=30, what="baselines")

    # Two models roll out at once; a node outside the current wave keeps the previous version.
    for model in ("ranker", "scorer"):
        fleet.publish(model, write_model(models_dir / model, 2))
    view = wait_rollout(fleet, "ranker", state_is("baking", version=2), what="wave 1 baking")
    assert view["waves"] == [{"nodes": ["node-1"], "state": "baking"}, {"nodes": ["node-2"], "state": "pending"}]
    # Baking, within the policy's bake time (how much is left depends on this machine's speed, not asserted).
    assert view["previous"] == [1] and 0 < view["bake_remaining_seconds"] <= SLOW_BAKE["bake_seconds"]
    available(fleet, "ranker", [2], nodes=[0])
    available(fleet, "ranker", [1], nodes=[1])
    wait_rollout(fleet, "scorer", state_is("done", version=2), what="scorer done on its own bake")
    available(fleet, "scorer", [2])
    assert pinned(fleet, "scorer") == [2]

    # Pause, then restart master: the rollout resumes from the state document.
    assert command(fleet, "ranker", "pause")["changed"]
    assert fleet.master is not None
    fleet.master.restart()
    fleet.master.wait_healthy(60)
    view = wait_rollout(fleet, "ranker", state_is("paused", version=2), what="paused after the restart")
    assert view["wave"] == 0
    status = fleetctl(fleet, "status")
    assert status.returncode == 0 and "rollouts in progress" in status.stdout and "paused" in status.stdout
    command(fleet, "ranker", "resume")
    wait_rollout(fleet, "ranker", state_is("baking", version=2), what="baking again after resume")
    command(fleet, "ranker", "promote")
    view = wait_rollout(fleet, "ranker", lambda v: v["wave"] == 1 and v["state"] == "baking", what="wave 2 baking")
    command(fleet, "ranker", "promote")
    wait_rollout(fleet, "ranker", state_is("done", version=2), what="ranker done")
    available(fleet, "ranker", [2])
    with fleet.reader() as client:
        actions = [e["action"] for e in client.get("/v1/audit", params={"model": "ranker"}).json()["entries"]]
    assert {"rollout pause", "rollout resume", "rollout promote", "rollout start 2", "rollout done 2"} <= set(actions)


def test_a_version_failing_on_real_traffic_stops_at_wave_one_and_reverts(fleet: LocalFleet, models_dir: Path) -> None:
    targets = {node.hostname: node.grpc_target for node in fleet.nodes}
    for node in fleet.nodes:  # v2 has had no call yet: its first one pays TensorFlow's first-call cost
        asyncio.run(predict_once(node, "ranker"))
    with predicting(targets, "ranker", rate=60.0) as loop:
        fleet.publish("ranker", write_model(models_dir / "ranker", 3, fail_above=0.5))
        view = wait_rollout(fleet, "ranker", state_is("reverted", version=3), what="reverted", timeout=120)
        available(fleet, "ranker", [2])
        stats = loop.snapshot()
    assert view["reason"].startswith("error-rate gate failed in wave 1"), view
    assert view["bad_versions"] == [3]
    outside = ["node-2"]
    assert all(stats.failed_per_node[n] == 0 and 3 not in stats.versions.get(n, {}) for n in outside), stats.summary()
    assert stats.failed_per_node["node-1"] > 0
    with fleet.reader() as client:
        entries = client.get("/v1/audit", params={"model": "ranker"}).json()["entries"]
        metrics = client.get("/metrics").text
    revert = next(e for e in entries if e["action"] == "rollout revert 3")
    assert "error-rate" in revert["reason"]
    assert metric_value(metrics, "modelfleet_master_rollout_reverts_total", model="ranker") == 1


def test_an_unhealthy_node_holds_its_wave_until_aborted(fleet: LocalFleet, models_dir: Path) -> None:
    node_1 = fleet.nodes[0]
    for role in ("puller", "config_manager"):
        node_1.processes[role].stop()
    try:
        fleet.publish("scorer", write_model(models_dir / "scorer", 3))
        view = wait_rollout(
            fleet, "scorer", lambda v: v["version"] == 3 and v["state"] == "waiting", what="waiting for node-1"
        )
        assert view["waiting_for"] == "node-1 unhealthy"
        available(fleet, "scorer", [2], nodes=[1])
        for _ in range(3):  # a 412 (the driver wrote meanwhile) is rerun, as the message tells operators
            result = fleetctl(fleet, "rollout", "abort", "scorer")
            if "412" not in result.stdout + result.stderr:
                break
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        for role in ("config_manager", "puller"):
            node_1.processes[role].start()
            node_1.processes[role].wait_healthy(60)
    available(fleet, "scorer", [2])
    view = wait_rollout(fleet, "scorer", state_is("aborted", version=3), what="aborted, held")
    assert view["reason"] == "aborted by local-admin" and view["bad_versions"] == []
    shown = fleetctl(fleet, "rollout", "status", "scorer")
    assert "aborted" in shown.stdout
