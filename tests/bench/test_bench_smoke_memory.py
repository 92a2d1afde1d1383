"""bench/memory still runs (``--smoke``): both sidecars start, reconcile repeatedly, and RSS is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_memory_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    report, _ = run_smoke("memory", out, timeout=580)
    assert report["models"] == 3 and report["reconciles"] == 10
    for name in ("config_manager", "puller"):
        result = report["results"][name]
        assert "error" not in result, result
        assert result["rss_idle_mb"] > 10 and result["rss_after_mb"] > 10  # a real process was measured
        assert result["last_error"] is None
    assert report["results"]["config_manager"]["models_available"] == 3
    # every reconcile flipped a label on every model: one reload each, plus the first apply
    assert report["results"]["config_manager"]["reloads"] >= 10
    assert report["results"]["puller"]["models_installed"] == 3
