"""bench/rollout still runs (``--smoke``, 2 nodes, waves 1/100 %, bake 2 s): a good version reaches every
node through the waves without a failed call, a bad one is stopped at the first wave and reverted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
def test_rollout_bench_smoke(tmp_path: Path) -> None:
    report, stdout = run_smoke("rollout", tmp_path / "rollout.json", timeout=400)
    good, bad = report["good"], report["bad"]
    assert good["failed_calls"] == 0, stdout
    assert len(bad["first_wave"]) == 1 and set(bad["answered_on"]) <= set(bad["first_wave"]), stdout
    assert bad["available_on"] == bad["first_wave"], stdout
    assert bad["reason"], stdout
    assert bad["failed_calls_outside_first_wave"] == 0, stdout
