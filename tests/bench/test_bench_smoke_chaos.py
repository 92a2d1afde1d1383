"""bench/chaos --smoke: every fault kind once on a 2-node fleet under the search-like load; the run fails
(exit 1) if any invariant breaks, and the report shows each fault really hit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos.faults import KINDS
from tests.bench.support import run_smoke
from tests.support.netns import netns_available

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.netns]


@pytest.mark.timeout(660)
def test_chaos_smoke_every_fault_once_every_invariant_held(tmp_path: Path) -> None:
    if not netns_available():
        pytest.fail("bench/chaos needs root (tmpfs mount, `ip netns`); deselect with -m 'not netns'")
    report, stdout = run_smoke("chaos", tmp_path / "chaos.json", timeout=600)
    assert "ALL INVARIANTS HELD" in stdout
    assert report["faults"] == dict.fromkeys(sorted(KINDS), 1)
    assert report["held"] and set(report["invariants"].values()) == {0}, report["invariants"]
    assert sorted(report["per_node"]) == ["node-1", "node-2"]
    assert report["searches"] > 0 and report["calls"] >= 15 * report["searches"]
    # The faults bit: the killed model server and the partitioned node failed calls, and only they did.
    causes = {cause for row in report["per_node"].values() for cause in row["failed"]}
    assert causes <= {"server down", "partitioned", "client stalled"}, report["per_node"]
    assert {w["cause"] for w in report["windows"]} == {"server down", "partitioned"}
    assert all(w["end"] is not None for w in report["windows"]), report["windows"]  # each node answered again
    assert report["corrupt_versions"] and report["converge_seconds"] is not None
    assert report["watcher_scans"] > 10
