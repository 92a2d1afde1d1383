"""bench/switch --smoke: under a search-like load on 2 nodes, a version answering NaN never answers a production
call, no call fails, and the generated warm-up file is what the model server replays before the switch.

(That the file is read by TensorFlow's record reader and tensorflow-serving-api's ``PredictionLog`` is
tests/common/test_golden.py::test_generated_warmup_file_is_what_upstream_reads.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.switch.run import BAD_VERSION, WARMUP_REPEAT
from services.config_manager.golden import GOLDEN_CHECK_FAILED
from tests.bench.support import run_smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(330)
def test_switch_smoke_bad_version_never_answers_and_warmup_is_replayed(tmp_path: Path) -> None:
    report, stdout = run_smoke("switch", tmp_path / "switch.json", timeout=300)
    nodes = ["node-1", "node-2"]
    assert sorted(report["versions_answered"]) == nodes
    # Every switch happened under the load, and the NaN version never answered on any node.
    assert all(versions == [1, 4] for versions in report["versions_answered"].values()), report
    assert report["bad_version_answered"] == 0
    bad, warm = report["phases"]  # --smoke leaves out the switch without warm-up (cold calls miss deadlines)
    assert sorted(bad["rejected"]) == nodes
    assert all(message.startswith(GOLDEN_CHECK_FAILED) for message in bad["rejected"].values()), bad
    assert bad["version"] == BAD_VERSION and BAD_VERSION not in bad["versions_answered"]
    # 0 failed calls: a deadline missed only while the bench's own client was starved is told apart.
    assert report["failed"] == report["failed_while_client_stalled"], report["failed_by_code"]
    assert report["calls"] > 500 and report["steady"]["calls"] > 100
    # The served load of v4 replayed the puller's generated records (the pullers restarted with them on).
    assert warm["generated_warmup"] and warm["warmup_records_replayed"] == dict.fromkeys(nodes, WARMUP_REPEAT)
    assert sorted(warm["available_at"]) == nodes and warm["around_switch"]["calls"] > 0
    assert "p99 / steady p99" in stdout
