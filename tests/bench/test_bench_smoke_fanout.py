"""bench/master_fanout --smoke: the fan-out benchmark runs and meets its budget at small scale."""

from __future__ import annotations

import pytest

from tests.bench.support import run_bench


@pytest.mark.slow
def test_master_fanout_smoke() -> None:
    stdout = run_bench("master_fanout", "--smoke", timeout=240)
    assert "GET /v1/cluster?refresh=true" in stdout and "p95" in stdout
    assert "master RSS" in stdout and "answers correct" in stdout
