"""bench/rollout still runs end to end (``--smoke``): a bad version stays on the first wave and is reverted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(660)
def test_rollout_smoke_good_version_everywhere_bad_one_first_wave_only(tmp_path: Path) -> None:
    figures, stdout = run_smoke("rollout", tmp_path / "rollout.json", timeout=600)
    assert "bad v3" in stdout
    assert figures["waves"] == [["node-1"], ["node-2"]]
    assert figures["good"]["failed_calls"] == 0, figures
    bad = figures["bad"]
    assert bad["first_wave"] == ["node-1"] and set(bad["available_on"]) <= {"node-1"}, bad
    assert set(bad["answered_on"]) <= {"node-1"} and bad["failed_calls_outside_first_wave"] == 0, bad
    assert bad["reason"].startswith("error-rate gate failed in wave 1"), bad
