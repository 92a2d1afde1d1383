"""bench/listing still runs (``--smoke``) and an unchanged bucket costs list calls only, no object read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_listing_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "listing.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/listing/run.py"), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["objects"] == 20 * 5 * 3 + 1
    assert report["first_pass"]["media_reads"] == 20 * 2 * 3 + 3  # latest + previous; model-0000 keeps 2
    assert report["unchanged_poll"]["object_reads"] == 0
    assert report["unchanged_poll"]["list_calls"] == 1
    assert report["goals"]["list_calls_met"] and report["goals"]["object_reads_met"]
