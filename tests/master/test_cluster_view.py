"""The cluster view (merged per node and model, convergence, skew) and the re-exported fleet metrics."""

from __future__ import annotations

from collections.abc import Callable

from services.common.contracts import HeldChange, LiveVersion, ModelNodeStatus
from services.master.cluster import NodeModelView, is_converged, merge_model
from tests.master.conftest import MasterHandle, register
from tests.master.support import StandInSidecar, node_model


def test_merge_takes_desired_from_the_puller_and_live_facts_from_config_manager() -> None:
    puller = ModelNodeStatus(
        serve=[2],
        keep=[1, 2],
        labels={"stable": 2},
        remote_complete=[1, 2, 3],
        on_disk=[1, 2],
        failed={"3": "crc mismatch"},
    )
    cm = ModelNodeStatus(
        serve=[2],
        keep=[1, 2],
        in_config=[1, 2],
        config_labels={"stable": 1},
        available=[1, 2],
        live=[LiveVersion(version=2, state="AVAILABLE")],
        held=[HeldChange(version=2, reason="input signature changed")],
    )
    view = merge_model(puller, cm)
    assert (view.serve, view.keep, view.remote_complete, view.on_disk) == ([2], [1, 2], [1, 2, 3], [1, 2])
    assert (view.in_config, view.available, view.config_labels) == ([1, 2], [1, 2], {"stable": 1})
    assert view.failed == {"3": "crc mismatch"} and view.held[0].reason == "input signature changed"
    assert view.converged is False  # 1 still AVAILABLE and the label not moved (held)
    assert is_converged(NodeModelView(serve=[2], labels={"s": 2}, available=[2], config_labels={"s": 2}))
    assert not is_converged(NodeModelView(serve=[2], available=None))  # config_manager has not reported
    assert is_converged(NodeModelView(serve=[], available=None))  # retired and gone


def test_cluster_view_convergence_skew_failures_and_metrics(
    start_master: Callable[..., MasterHandle], sidecars: Callable[..., StandInSidecar]
) -> None:
    master = start_master()
    wanted = {"ranker": node_model([2], remote_complete=[1, 2])}
    a_p = sidecars("node-a", "puller", models=wanted)
    a_c = sidecars("node-a", "config_manager", models={"ranker": node_model([2], [2])})
    b_p = sidecars("node-b", "puller", models=wanted)
    b_c = sidecars(
        "node-b", "config_manager", models={"ranker": node_model([2], [1], failed={"2": "Failed to load: bad graph"})}
    )
    with master.client() as client:
        register(client, a_p, a_c, b_p, b_c)
        stale_view = client.get("/v1/cluster").json()
        assert stale_view["polled_at"] is None and stale_view["nodes_healthy"] == 0
        cluster = client.get("/v1/cluster", params={"refresh": "true"}).json()
        assert (cluster["nodes_total"], cluster["nodes_healthy"], cluster["converged"]) == (2, 2, False)
        ranker = cluster["models"]["ranker"]
        assert ranker["converged"] is False and ranker["not_converged"] == ["node-b"]
        assert ranker["skew"] is True and ranker["available_by_node"] == {"node-a": [2], "node-b": [1]}
        assert ranker["failed_on"] == {"node-b": {"2": "Failed to load: bad graph"}}
        node_a = next(n for n in cluster["nodes"] if n["hostname"] == "node-a")
        assert node_a["models"]["ranker"]["remote_complete"] == [1, 2]
        assert node_a["models"]["ranker"]["converged"] is True
        metrics = client.get("/metrics").text
        assert 'modelfleet_master_sidecar_up{hostname="node-b",role="config_manager"} 1.0' in metrics
        assert 'modelfleet_master_node_model_newest_available_version{hostname="node-b",model="ranker"} 1.0' in metrics
        assert 'modelfleet_master_model_converged{model="ranker"} 0.0' in metrics
        assert "modelfleet_master_fleet_converged 0.0" in metrics
        assert 'modelfleet_master_polls_total{result="ok"} 4.0' in metrics
        # node-b recovers; node-a's config_manager goes silent: unhealthy nodes do not block convergence.
        b_c.models = {"ranker": node_model([2], [2])}
        a_c.mode = "error"
        for _ in range(3):
            cluster = client.get("/v1/cluster", params={"refresh": "true"}).json()
        assert cluster["nodes_healthy"] == 1
        assert cluster["models"]["ranker"]["converged"] is True and cluster["converged"] is True
        node_a = next(n for n in cluster["nodes"] if n["hostname"] == "node-a")
        assert node_a["healthy"] is False and node_a["sidecars"]["config_manager"]["consecutive_failures"] == 3
        metrics = client.get("/metrics").text
        assert 'modelfleet_master_node_up{hostname="node-a"} 0.0' in metrics
        assert "modelfleet_master_fleet_converged 1.0" in metrics
        one = client.get("/v1/nodes/node-b").json()
        assert one["models"]["ranker"]["available"] == [2]
        assert client.get("/v1/nodes/nope").status_code == 404
