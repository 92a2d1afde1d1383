"""bench/download still runs end to end (``--smoke``): every contestant measured, the puller verified."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_download_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "download.json"
    report, stdout = run_smoke("download", out, timeout=280)
    assert set(report["sets"]) == {"one-big", "savedmodel", "many-small"}
    for name, result in report["sets"].items():
        puller = result["results"]["puller"]
        assert puller["bytes"] == result["bytes"], name
        assert puller["mb_per_s"] > 0 and 0 < puller["peak_rss_mb"] < 1000
        assert result["results"]["gcs-plain"]["bytes"] == result["bytes"]
        assert result["ratios"]["vs_plain_gcs"]["ratio"] > 0
        for limit in ("disk-dd", "disk-dd-direct", "net-only"):  # machine limits: no network / no disk
            assert result["results"][limit]["bytes"] == result["bytes"], limit
        machine = result["ratios"]["vs_machine_limit"]
        assert machine["ratio"] > 0 and machine["goal"] == (None if name == "many-small" else 0.85)
        assert result["ratios"]["vs_network_only"]["ratio"] > 0
        for peer in ("rclone-tuned", "rclone-tuned+sync", "rclone-defaults"):
            if shutil.which("rclone"):
                assert result["results"][peer]["bytes"] == result["bytes"], peer
            else:
                assert "skipped" in result["results"][peer]
    assert "MB/s" in stdout and "peak RSS" in stdout
