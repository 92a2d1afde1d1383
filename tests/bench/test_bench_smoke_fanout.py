"""bench/master_fanout --smoke: the fan-out benchmark runs and meets its budget at small scale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_master_fanout_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "bench/master_fanout/run.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /v1/cluster?refresh=true" in result.stdout and "p95" in result.stdout
    assert "master RSS" in result.stdout and "answers correct" in result.stdout
