"""The local-fleet benchmarks of issue 8 still run end to end (``--smoke``): figures printed and written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(660)
def test_propagation_smoke_measures_every_node(tmp_path: Path) -> None:
    out = tmp_path / "propagation.json"
    report, stdout = run_smoke("propagation", out, timeout=600)
    assert "last object uploaded → AVAILABLE on all nodes" in stdout
    (mode,) = report
    # One fleet with bucket notifications: a rollout by events, a pin, then (Pub/Sub emulator killed)
    # a rollout by polling: every node got every change in both modes.
    assert mode["mode"] == "events"
    assert [r["mode"] for r in mode["rounds"]] == ["events", "fallback"]
    for r in mode["rounds"]:
        assert sorted(r["per_node"]) == ["node-1", "node-2"]
        # A version cannot be AVAILABLE before the bucket says it is complete (the quiet period).
        assert min(r["per_node"].values()) >= mode["quiet_period"]
        assert r["all_nodes"] == max(r["per_node"].values())
    assert sorted(mode["pin"]["per_node"]) == ["node-1", "node-2"]


@pytest.mark.timeout(660)
def test_availability_smoke_no_failed_predict(tmp_path: Path) -> None:
    out = tmp_path / "availability.json"
    figures, _ = run_smoke("availability", out, timeout=600)
    assert figures["control_plane_failed"] == 0 and figures["total"] >= 1000, figures
    assert [p["phase"].split()[0] for p in figures["phases"]] == [
        "warm-up",
        "rollout",
        "rollback",
        "restart",
        "restart",
        "steady",
    ]
    assert set(figures["per_node"]) == {"node-1", "node-2"}
    # The rollout and the rollback both happened under load: both versions answered on every node.
    assert all(set(v) == {"1", "2"} for v in figures["versions"].values()), figures["versions"]
