"""Debounced health polling (reference commit behaviour) and 503 + Retry-After versus 404."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.master.conftest import ADMIN, MasterHandle, register
from tests.master.support import StandInSidecar, free_port


def sidecar_health(client: httpx.Client, hostname: str, role: str = "puller", *, refresh: bool = True) -> dict:
    cluster = client.get("/v1/cluster", params={"refresh": str(refresh).lower()}).json()
    node = next(n for n in cluster["nodes"] if n["hostname"] == hostname)
    return node["sidecars"][role]


def test_one_miss_stays_healthy_three_misses_flip_and_a_success_resets(
    start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> None:
    master = start_master()
    node = sidecars("node-1")
    with master.client() as client:
        register(client, node)
        assert sidecar_health(client, "node-1")["healthy"] is True
        node.mode = "error"
        first = sidecar_health(client, "node-1")
        assert first["healthy"] is True and first["consecutive_failures"] == 1
        assert "500" in first["last_error"]
        assert sidecar_health(client, "node-1")["healthy"] is True
        third = sidecar_health(client, "node-1")
        assert third["healthy"] is False and third["consecutive_failures"] == 3
        node.mode = "ok"
        back = sidecar_health(client, "node-1")
        assert back["healthy"] is True and back["consecutive_failures"] == 0 and back["last_error"] is None
        # Two misses, a success, two misses again: never three in a row, so never unhealthy.
        for mode in ("error", "error", "ok", "error", "error"):
            node.mode = mode
            assert sidecar_health(client, "node-1")["healthy"] is True


def test_a_node_never_seen_healthy_stays_unhealthy(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    dead = f"http://127.0.0.1:{free_port()}"
    with master.client() as client:
        r = client.post(
            "/v1/nodes/register",
            json={"hostname": "ghost", "role": "puller", "base_url": dead},
            headers={"Authorization": "Bearer fleet-secret"},
        )
        assert r.status_code == 200
        # Before any poll and after one failed poll: unhealthy (the debounce shields only healthy nodes).
        assert sidecar_health(client, "ghost", refresh=False)["healthy"] is False
        health = sidecar_health(client, "ghost")
        assert health["healthy"] is False and health["ever_healthy"] is False
        assert health["consecutive_failures"] == 1 and "Connect" in health["last_error"]


def test_a_hanging_node_costs_one_node_timeout(
    start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> None:
    master = start_master(node_timeout_seconds=0.5)
    fine, hung = sidecars("node-1"), sidecars("node-2", mode="hang")
    with master.client() as client:
        register(client, fine, hung)
        # The caller's deadline is one node timeout + 0.5 s: a hung node must not hold the answer longer.
        cluster = client.get("/v1/cluster", params={"refresh": "true"}, timeout=0.5 + 0.5).json()
        nodes = {n["hostname"]: n for n in cluster["nodes"]}
        assert nodes["node-1"]["healthy"] is True
        assert "no answer within 0.5s" in nodes["node-2"]["sidecars"]["puller"]["last_error"]
        assert cluster["age_seconds"] is not None and cluster["age_seconds"] < 1


def test_unknown_node_is_404_unhealthy_node_is_503_with_retry_after(
    start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> None:
    master = start_master(poll_interval_seconds=4)
    puller, cm = sidecars("node-1", "puller"), sidecars("node-1", "config_manager")
    with master.client(headers=ADMIN) as client:
        register(client, puller, cm)
        missing = client.post("/v1/nodes/node-9/sync")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert "retry-after" not in missing.headers
        # Registered but never polled healthy yet: exists, unhealthy now → retryable.
        early = client.post("/v1/nodes/node-1/sync")
        assert early.status_code == 503 and early.headers["retry-after"] == "4"
        assert "node-1" in early.json()["detail"]
        client.get("/v1/cluster", params={"refresh": "true"})
        ok = client.post("/v1/nodes/node-1/sync")
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert puller.calls == ["sync"] and cm.calls == ["sync"]
        assert client.post("/v1/nodes/node-1/gc").status_code == 200 and cm.calls == ["sync", "gc"]
        cm.mode = "error"
        for _ in range(3):
            client.get("/v1/cluster", params={"refresh": "true"})
        down = client.post("/v1/nodes/node-1/gc")
        assert down.status_code == 503 and down.headers["retry-after"] == "4"
        assert down.json()["detail"] == "node node-1 is unhealthy, retry in 4 s"


def test_cluster_sync_reaches_every_node_and_reports_the_silent_ones(
    start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> None:
    master = start_master(node_timeout_seconds=0.5)
    a_p, a_c = sidecars("node-a", "puller"), sidecars("node-a", "config_manager")
    b_p = sidecars("node-b", "puller", mode="hang")
    with master.client(headers=ADMIN) as client:
        register(client, a_p, a_c, b_p)
        result = client.post("/v1/cluster/sync", timeout=1.0).json()  # deadline: one node timeout + 0.5 s
        assert (result["ok"], result["nodes_total"], result["nodes_ok"]) == (False, 2, 1)
        by_host = {n["hostname"]: n for n in result["nodes"]}
        assert by_host["node-b"]["results"][0]["timed_out"] is True
        assert a_p.calls == ["sync"] and a_c.calls == ["sync"]
        gc = client.post("/v1/cluster/gc").json()
        assert [n["hostname"] for n in gc["nodes"]] == ["node-a"] and a_c.calls == ["sync", "gc"]
