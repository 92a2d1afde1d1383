"""bench/listing still runs (``--smoke``): an unchanged bucket costs list calls only, no object read, and with
events not even those."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.support import run_smoke

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_listing_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "listing.json"
    report, _ = run_smoke("listing", out, timeout=280)
    assert report["objects"] == 20 * 5 * 3 + 1
    assert report["first_pass"]["media_reads"] == 20 * 2 * 3 + 3  # latest + previous; model-0000 keeps 2
    assert report["unchanged_poll"]["object_reads"] == 0
    assert report["unchanged_poll"]["list_calls"] == 1
    assert report["goals"]["list_calls_met"] and report["goals"]["object_reads_met"]
    # With bucket notifications: an unchanged bucket is not listed at all; a new version lists its model.
    assert report["events"]["steady_list_calls"] == 0
    assert report["events"]["upload_list_calls"] >= 1
