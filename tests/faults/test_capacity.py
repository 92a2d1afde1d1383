"""Out of (GPU) memory is a capacity problem, not corruption: the first version keeps serving, master's
view says "capacity" with the bytes needed, and the version loads once the operator frees memory.

The node's local_serving has a memory budget (``--local_only_memory_budget_bytes``: a version costs
the bytes of its variables) and loads slowly (``--local_only_load_delay_seconds``) on top of the stack's
own tfserving flags: a 20 MB model that takes 5 s to load, as big models do in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.local_fleet.fleet import FleetOptions
from tests.faults.conftest import MODEL, SYNC_INTERVAL, converge, targets
from tests.support.faults import FaultFleet, fleetctl, sidecar_status, wait_for
from tests.support.predict_loop import PredictLoop
from tests.support.savedmodels import write_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OTHER = "other"
BIG = 20 << 20
LOAD_SECONDS = 5
BUDGET = 2 * BIG + BIG // 2  # two big versions fit, three do not


@pytest.fixture
def small_gpu_fleet(tmp_path: Path) -> Iterator[FaultFleet]:
    options = FleetOptions(
        nodes=1,
        sync_interval=SYNC_INTERVAL,
        quiet_period=1.0,
        master_poll_interval=1.0,
        serving_args=(
            f"--local_only_memory_budget_bytes={BUDGET}",
            f"--local_only_load_delay_seconds={LOAD_SECONDS}",
        ),
    )
    fleet = FaultFleet(tmp_path / "fleet", options)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def _capacity_in_view(fleet: FaultFleet) -> dict[str, Any] | None:
    view = fleet.cluster(refresh=True)
    summary = view["models"].get(MODEL, {})
    if not summary.get("capacity_on"):
        return None
    return view  # type: ignore[no-any-return]


def test_a_version_that_does_not_fit_leaves_the_first_serving_until_memory_frees(
    small_gpu_fleet: FaultFleet, tmp_path: Path
) -> None:
    fleet = small_gpu_fleet
    (node,) = fleet.nodes
    models = tmp_path / "models"
    fleet.publish(MODEL, write_model(models / MODEL, 1, padding_bytes=BIG))
    fleet.publish(OTHER, write_model(models / OTHER, 1, padding_bytes=BIG))
    converge(fleet.nodes, [1], timeout=120)
    with PredictLoop(targets(fleet.nodes), MODEL) as loop:
        fleet.publish(MODEL, write_model(models / MODEL, 2, padding_bytes=BIG))
        view = wait_for(lambda: _capacity_in_view(fleet), timeout=120, what="capacity in master's view")
        assert view["models"][MODEL]["capacity_on"] == {node.hostname: [2]}
        (entry,) = [n["models"][MODEL] for n in view["nodes"] if n["hostname"] == node.hostname]
        (shortfall,) = entry["capacity"]
        assert shortfall["version"] == 2 and shortfall["bytes_needed"] >= BIG
        assert entry["failed"] == {} and entry["available"] == [1]
        cm = sidecar_status(node, "config_manager")
        assert "capacity" in {alarm["kind"] for alarm in cm["alarms"]}
        assert "capacity" in fleetctl(fleet, "status").stdout

        # The operator frees memory: the other model is retired, v2 loads and takes over.
        retired = fleetctl(fleet, "retire", OTHER)
        assert retired.returncode == 0, retired.stdout + retired.stderr
        converge(fleet.nodes, [2], timeout=120)
        assert loop.wait_answered(node.hostname, 2, timeout=15)
        stats = loop.stop()
    view = fleet.cluster(refresh=True)
    assert view["models"][MODEL].get("capacity_on", {}) == {}
    print("capacity fault:", stats.summary())
    assert stats.control_plane_failed == 0, stats.summary()
    assert set(stats.versions[node.hostname]) == {1, 2}, stats.summary()
