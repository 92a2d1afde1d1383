"""One node cut off in a network namespace: unhealthy after 3 failed polls (not 1), node operations answer
503 + Retry-After meanwhile, and it recovers when the link returns.

Layout: master and fake GCS listen on 10.213.7.1 (root end of a veth pair, a /24 that exists only
between us and our namespace); node-1 runs in the root namespace; node-2's local_serving, puller and
config_manager run inside the namespace at 10.213.7.2, pointed at master and the bucket over the veth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import MODEL, POLL_INTERVAL, converge, fleet_options, targets
from tests.support.faults import FaultFleet, NetnsNode, fleetctl, get_json, wait_for
from tests.support.netns import namespace, netns_available
from tests.support.predict_loop import PredictLoop

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.netns]


@pytest.fixture
def partitioned_fleet(tmp_path: Path) -> Iterator[tuple[FaultFleet, NetnsNode]]:
    if not netns_available():
        pytest.fail("this test needs root and `ip netns` (run CI as root or deselect -m 'not netns')")
    with namespace("mfh-node2") as ns:
        fleet = FaultFleet(tmp_path / "fleet", fleet_options(nodes=1), host=ns.root_ip)
        try:
            fleet.start()
            cut_off = fleet.add_netns_node(ns)
            yield fleet, cut_off
        finally:
            fleet.stop()


def _node(fleet: FaultFleet, hostname: str) -> dict[str, Any]:
    node: dict[str, Any] = get_json(f"{fleet.master_url}/v1/nodes/{hostname}", token=fleet.read_token)
    return node


def test_cut_off_node_unhealthy_after_three_polls_503_then_recovers(
    partitioned_fleet: tuple[FaultFleet, NetnsNode], model_versions: dict[int, Path]
) -> None:
    fleet, cut_off = partitioned_fleet
    assert cut_off.namespace is not None
    fleet.publish(MODEL, model_versions[1])
    converge(fleet.nodes, [1])  # the namespaced node pulled through the veth like the others
    wait_for(lambda: _node(fleet, cut_off.hostname)["healthy"], timeout=30, what="node-2 healthy in master")
    reachable = [n for n in fleet.nodes if n is not cut_off]
    timeline: list[tuple[float, int, bool]] = []  # (seconds since cut, puller's failed polls, node healthy)
    with PredictLoop(targets(reachable), MODEL) as loop, fleet.admin() as admin:
        cut_at = time.monotonic()
        cut_off.namespace.cut()

        def unhealthy() -> bool:
            node = _node(fleet, cut_off.hostname)
            timeline.append(
                (time.monotonic() - cut_at, node["sidecars"]["puller"]["consecutive_failures"], node["healthy"])
            )
            return not node["healthy"]

        wait_for(unhealthy, timeout=12 * POLL_INTERVAL + 30, interval=0.2, what="node-2 marked unhealthy")
        refused = admin.post(f"/v1/nodes/{cut_off.hostname}/sync")
        healthy_node_sync = admin.post(f"/v1/nodes/{reachable[0].hostname}/sync")
        cli = fleetctl(fleet, "sync", cut_off.hostname)  # what an operator types
        cluster_view = fleet.cluster(refresh=False)
        cut_off.namespace.restore()
        restored_at = time.monotonic()
        # Recovery deadline: two polls once the link is back, plus slack for a loaded machine.
        wait_for(
            lambda: _node(fleet, cut_off.hostname)["healthy"],
            timeout=2 * POLL_INTERVAL + 10,
            what="node-2 healthy again",
        )
        recovered_after = time.monotonic() - restored_at
        accepted = admin.post(f"/v1/nodes/{cut_off.hostname}/sync")
        stats = loop.stop()

    first_unhealthy = next(t for t, _, healthy in timeline if not healthy)
    print(f"cut → unhealthy after {first_unhealthy:.1f}s; link back → healthy after {recovered_after:.1f}s")
    # Debounce: still healthy after 1 and 2 failed polls, unhealthy from the 3rd.
    failures_while_healthy = {f for _, f, healthy in timeline if healthy}
    assert {1, 2} & failures_while_healthy, timeline
    assert all(f >= 3 for _, f, healthy in timeline if not healthy), timeline
    assert max(failures_while_healthy) < 3, timeline
    assert first_unhealthy > 2 * POLL_INTERVAL, timeline  # three polls cannot fit in less

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["Retry-After"]) >= 1
    assert cut_off.hostname in refused.json()["detail"]
    assert healthy_node_sync.status_code in (200, 202), healthy_node_sync.text
    assert cli.returncode != 0, cli.stdout
    cli_error = " ".join((cli.stdout + cli.stderr).split())
    assert f"{cut_off.hostname} is unhealthy" in cli_error and "retry in" in cli_error, cli_error
    assert cluster_view["nodes_healthy"] == 1 and cluster_view["nodes_total"] == 2

    assert accepted.status_code in (200, 202), accepted.text
    assert stats.control_plane_failed == 0, stats.summary()  # the reachable node never noticed
    converge(fleet.nodes, [1], timeout=10)
    with httpx.Client(timeout=5, trust_env=False) as client:  # the node's sidecars answer over the link again
        fleet_token = {"Authorization": f"Bearer {fleet.fleet_token}"}
        status = client.get(f"http://{cut_off.address}:{cut_off.puller_port}/v1/status", headers=fleet_token)
        assert status.status_code == 200
