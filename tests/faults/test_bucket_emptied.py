"""A model's prefix emptied by mistake: nothing unloads anywhere; the alarm shows in fleetctl and /metrics."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest

from services.local_fleet.fleet import Node
from tests.faults.conftest import MODEL, SYNC_INTERVAL, converge, targets
from tests.support.faults import (
    FaultFleet,
    fleetctl,
    metric_value,
    partial_version_problems,
    sidecar_metrics,
    sidecar_status,
    wait_for,
)
from tests.support.predict_loop import PredictLoop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _mass_removal_alarm(node: Node) -> bool:
    return any(a["kind"] == "mass-removal" for a in sidecar_status(node, "puller")["alarms"])


def test_emptied_prefix_unloads_nothing_and_raises_the_alarm(
    fleet: FaultFleet, model_versions: dict[int, Path]
) -> None:
    fleet.publish(MODEL, model_versions[1])
    fleet.publish(MODEL, model_versions[2])
    converge(fleet.nodes, [2])
    on_disk = {n.hostname: sorted(p.name for p in (n.model_dir / MODEL).iterdir()) for n in fleet.nodes}
    with PredictLoop(targets(fleet.nodes), MODEL) as loop:
        blobs = list(fleet.bucket().list_blobs(prefix=f"{fleet.options.prefix}/{MODEL}/"))
        assert blobs
        for blob in blobs:  # a wrong `gsutil rm -r`, a lifecycle rule, ...
            blob.delete()
        for node in fleet.nodes:
            wait_for(
                functools.partial(_mass_removal_alarm, node),
                timeout=10 * SYNC_INTERVAL,
                what=f"mass-removal alarm on {node.hostname}",
            )
        time.sleep(5 * SYNC_INTERVAL)  # several more sync passes and reconciles: still nothing unloads
        converge(fleet.nodes, [2], timeout=5)
        stats = loop.stop()
    assert stats.control_plane_failed == 0, stats.summary()
    assert all(stats.versions[n.hostname][2] > 100 for n in fleet.nodes), stats.summary()
    for node in fleet.nodes:
        assert sorted(p.name for p in (node.model_dir / MODEL).iterdir()) == on_disk[node.hostname]
        assert partial_version_problems(node) == []
        metrics = sidecar_metrics(node, "puller")
        assert (metric_value(metrics, "modelfleet_puller_alarm", kind="mass-removal") or 0) >= 1, metrics
    fleet.cluster()  # fresh poll, so the CLI reads the current state
    status = fleetctl(fleet, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "mass-removal" in status.stdout, status.stdout
    for node in fleet.nodes:
        assert node.hostname in status.stdout
