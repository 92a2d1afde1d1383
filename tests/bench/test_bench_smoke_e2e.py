"""The local-fleet benchmarks of issue 8 still run end to end (``--smoke``): figures printed and written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / name / "run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.timeout(660)
def test_propagation_smoke_measures_every_node(tmp_path: Path) -> None:
    out = tmp_path / "propagation.json"
    result = run_bench("propagation", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "last object uploaded → AVAILABLE on all nodes" in result.stdout
    (mode,) = json.loads(out.read_text())
    assert mode["mode"] == "quiet" and len(mode["rounds"]) == 2
    for r in mode["rounds"]:
        assert sorted(r["per_node"]) == ["node-1", "node-2"]
        # A version cannot be AVAILABLE before the bucket says it is complete (the quiet period).
        assert min(r["per_node"].values()) >= mode["quiet_period"]
        assert r["all_nodes"] == max(r["per_node"].values())


@pytest.mark.timeout(660)
def test_availability_smoke_no_failed_predict(tmp_path: Path) -> None:
    out = tmp_path / "availability.json"
    result = run_bench("availability", out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["failed"] == 0 and figures["total"] >= 1000, figures
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
