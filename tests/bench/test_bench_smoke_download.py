"""bench/download still runs end to end (``--smoke``): every contestant measured, the puller verified."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_download_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "download.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/download/run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["sets"]) == {"one-big", "savedmodel", "many-small"}
    for name, result in report["sets"].items():
        puller = result["results"]["puller"]
        assert puller["bytes"] == result["bytes"], name
        assert puller["mb_per_s"] > 0 and 0 < puller["peak_rss_mb"] < 1000
        assert result["results"]["gcs-plain"]["bytes"] == result["bytes"]
        assert result["ratios"]["vs_plain_gcs"]["ratio"] > 0
        for peer in ("rclone-tuned", "rclone-tuned+sync", "rclone-defaults"):
            if shutil.which("rclone"):
                assert result["results"][peer]["bytes"] == result["bytes"], peer
            else:
                assert "skipped" in result["results"][peer]
    assert "MB/s" in done.stdout and "peak RSS" in done.stdout
