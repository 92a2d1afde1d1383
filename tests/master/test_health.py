"""Debounced health polling (reference commit behaviour) and 503 + Retry-After versus 404."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from services.master.settings import Settings
from tests.master.conftest import ADMIN, FLEET, MasterHandle, register
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


# master's own /healthz: the poller finishes rounds, the registry can be persisted (small bounds).
QUICK_HEALTH = {
    "poll_interval_seconds": 0.1,
    "health_min_stale_seconds": 0.5,
    "health_stuck_seconds": 0.5,
    "health_probe_cache_seconds": 0,
}


def until_health(client: httpx.Client, status: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/healthz")
        if response.status_code == status:
            return response.json()
        assert time.monotonic() < deadline, f"/healthz never answered {status}: {response.text}"
        time.sleep(0.05)


@pytest.fixture
def polling_master(make_settings: Callable[..., Settings]) -> Iterator[MasterHandle]:
    handle = MasterHandle(make_settings(**QUICK_HEALTH), run_poller=True)
    yield handle
    handle.stop()


def test_master_health_is_red_while_the_poller_does_not_finish_rounds(
    polling_master: MasterHandle, sidecars: Callable[..., StandInSidecar]
) -> None:
    release = threading.Event()
    release.set()
    with polling_master.client() as client:
        dead = sidecars("node-1")
        register(client, dead)
        dead.mode = "error"  # failed polls are the nodes' problem, not master's
        body = until_health(client, 200)
        assert set(body["checks"]) == {"poller", "registry", "rollout"} and "uptime_seconds" in body
        poller = polling_master.app.state.fleet.poller
        poll_all = poller.poll_all

        async def maybe_stuck(targets: frozenset[str] | None = None) -> object:
            while not release.is_set():
                await asyncio.sleep(0.02)
            return await poll_all(targets)

        poller.poll_all = maybe_stuck
        assert until_health(client, 200)["checks"]["poller"]["ok"] is True
        release.clear()
        red = until_health(client, 503)
        assert red["failed"] == ["poller"] and "worker stuck" in red["detail"]
        release.set()
        until_health(client, 200)
        # A loop that stops scheduling rounds: no round finishes within k x interval.
        poller._next_delay = lambda: 3600.0
        red = until_health(client, 503)
        assert red["failed"] == ["poller"] and "worker stale" in red["detail"]


def test_master_health_is_red_while_the_registry_cannot_be_persisted(
    polling_master: MasterHandle, sidecars: Callable[..., StandInSidecar]
) -> None:
    state = polling_master.settings.state_dir
    with polling_master.client() as client:
        until_health(client, 200)
        shutil.rmtree(state)
        state.write_text("a file where the state dir should be\n")
        red = until_health(client, 503)
        assert red["failed"] == ["registry"] and "not writable" in red["detail"]
        # A registration that cannot be saved: the last save failed, whatever the probe says later.
        node = sidecars("node-2")
        with polling_master.client() as other:  # the server drops the connection after a 500
            refused = other.post("/v1/nodes/register", json=node.registration(), headers=FLEET)
        assert refused.status_code == 500
        red = until_health(client, 503)
        assert "last registry save failed" in red["detail"]
        state.unlink()
        state.mkdir()
        # The next poller round saves the still-dirty registry: green again, and the node is on disk.
        until_health(client, 200)
        assert "node-2" in (state / "registry.json").read_text()
