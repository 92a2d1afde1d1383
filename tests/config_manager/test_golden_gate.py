"""Golden requests checked before traffic: a version that answers wrong never answers a production call.

A new version of a model with golden requests is loaded under ``_candidate.<model>`` (a base path that
exposes only that version), judged, and only then added to the served model; a rejected version is
recorded in failed.json and the old version keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.atomic import atomic_write_json
from services.common.contracts import Manifest
from services.common.contracts.golden import GoldenSet, golden_path
from services.common.contracts.local import failed_path, manifest_path
from services.common.tfs import TFServingClient, VersionState, parse_config
from services.common.tfs.warmup_records import WARMUP_PATH
from services.config_manager.api import GoldenTestRequest, run_golden_test
from services.config_manager.golden import GOLDEN_CHECK_FAILED
from services.config_manager.live import GRPC_OPTIONS
from tests.config_manager.conftest import Node, predict_loop, target

pytestmark = pytest.mark.slow


def golden_set(**checks: object) -> GoldenSet:
    return GoldenSet.model_validate(
        {
            "model": "m",
            "requests": [
                {
                    "name": "one",
                    "rest": {"instances": [[1.0]]},
                    "checks": {"outputs": {"y": {"dtype": "DT_FLOAT", "shape": [1, 1], "min": 0}}, **checks},
                }
            ],
        }
    )


def failed_entries(node: Node) -> list[dict[str, object]]:
    path = failed_path(node.root)
    return json.loads(path.read_text())["versions"] if path.exists() else []


async def candidate_states(node: Node) -> dict[int, VersionState]:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        return {s.version: s.state for s in await client.get_model_status("_candidate.m", timeout=3)}


async def test_a_version_answering_nan_is_rejected_before_any_production_call(node: Node, tmp_path: Path) -> None:
    node.add_version("m", 1)
    node.desire(m=target([1]))
    reconciler = node.reconciler()
    assert await reconciler.run_now(), reconciler.last_error
    atomic_write_json(golden_path(node.root, "m"), golden_set())

    node.add_version("m", 2)
    async with predict_loop(node, "m") as loop:
        node.desire(m=target([2]))
        assert await reconciler.run_now(), reconciler.last_error
        assert await loop.reached(2)
        node.add_version("m", 3, nan_answers=True)
        node.desire(m=target([3], keep=[2, 3]))
        assert await reconciler.run_now(), reconciler.last_error
        calls_before = loop.calls
        while loop.calls < calls_before + 20:  # the loop keeps calling after the verdict
            await reconciler.run_now()
    assert loop.failures == []
    assert loop.versions == [1, 2], "only checked versions ever answered"
    [rejected] = failed_entries(node)
    assert rejected["version"] == 3 and rejected["error_code"] == GOLDEN_CHECK_FAILED
    assert "not finite" in str(rejected["message"]) and "answer: y DT_FLOAT[1, 1] [nan]" in str(rejected["message"])
    # The candidate was unloaded; the file never named it; the old version still serves.
    assert (await candidate_states(node)) == {2: VersionState.END, 3: VersionState.END}
    entries = parse_config(node.config_file.read_text())
    assert [(e.name, e.versions) for e in entries] == [("m", (2,))]
    status = reconciler.snapshot.plans["m"]
    assert any("version 3 failed to load: GOLDEN_CHECK_FAILED" in note for note in status.notes), status.notes

    # ``fleetctl golden test`` runs a set against what serves now, changing nothing.
    report = await run_golden_test(reconciler, GoldenTestRequest(model="m"))
    assert report["passed"] and report["version"] == 2, report
    strict = golden_set().model_copy(deep=True)
    strict.requests[0].checks.outputs["y"].max = 1.5
    report = await run_golden_test(reconciler, GoldenTestRequest(model="m", golden=strict))
    assert not report["passed"] and "outside [0.0, 1.5]" in report["verdicts"][0]["failures"][0], report

    # A changed golden set judges the version again (and rejects it again: NaN is never finite).
    atomic_write_json(golden_path(node.root, "m"), golden_set(finite=True, agrees_with_serving={"atol": 10}))
    assert await reconciler.run_now(), reconciler.last_error
    [again] = failed_entries(node)
    assert again["version"] == 3 and again["attempts"] == 1 and "disagrees" in str(again["message"])


async def test_unreadable_sets_hold_no_set_serves_as_before_generated_warmup_never_bars_bytes(node: Node) -> None:
    node.add_version("m", 1)
    node.desire(m=target([1]))
    reconciler = node.reconciler()
    assert await reconciler.run_now(), reconciler.last_error
    golden_path(node.root, "m").parent.mkdir(parents=True, exist_ok=True)
    golden_path(node.root, "m").write_text("{not json")
    node.add_version("m", 2)
    node.desire(m=target([2]))
    assert await reconciler.run_now(), reconciler.last_error
    assert [e.versions for e in parse_config(node.config_file.read_text())] == [(1,)]
    assert any("golden set" in n and "unreadable" in n for n in reconciler.snapshot.plans["m"].notes)
    golden_path(node.root, "m").unlink()
    assert await reconciler.run_now(), reconciler.last_error
    assert [e.versions for e in parse_config(node.config_file.read_text())] == [(2,)]

    # A generated warm-up file that fails the load is removed and the version loads without it: the
    # bucket's bytes are never recorded as bad because of a file the fleet wrote.
    version_dir = node.add_version("m", 3)
    (version_dir / WARMUP_PATH).parent.mkdir()
    (version_dir / WARMUP_PATH).write_bytes(b"not a TFRecord file")
    manifest = Manifest.read(manifest_path(node.root, "m", 3))
    atomic_write_json(manifest_path(node.root, "m", 3), manifest.model_copy(update={"generated": [WARMUP_PATH]}))
    node.desire(m=target([3]))
    assert await reconciler.run_now(), reconciler.last_error
    assert not (version_dir / WARMUP_PATH).exists()
    for _ in range(10):
        if [e.versions for e in parse_config(node.config_file.read_text())] == [(3,)]:
            break
        assert await reconciler.run_now(), reconciler.last_error
    assert [e.versions for e in parse_config(node.config_file.read_text())] == [(3,)]
    assert failed_entries(node) == []
