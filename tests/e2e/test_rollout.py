"""Issue 8 end to end: publish, roll out under load, pin back, label, corrupt version — on 3 nodes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import TFServingError
from services.local_fleet.convergence import predict_once, wait_available
from services.local_fleet.fleet import LocalFleet
from services.local_fleet.savedmodels import write_corrupt_model, write_model
from tests.support.predict_loop import PredictStats, predicting

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "ranker"


def fleetctl(fleet: LocalFleet, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETCTL_MASTER": fleet.master_url, "FLEETCTL_TOKEN": fleet.admin_token}
    result = subprocess.run(
        [sys.executable, "-m", "services.master.fleetctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


async def under_load(fleet: LocalFleet, action: Any, *, label: str | None = None) -> PredictStats:
    """Run ``action`` while the search-like loop (600 ms deadlines) calls every node; return its tally."""
    targets = {node.hostname: node.grpc_target for node in fleet.nodes}
    with predicting(targets, MODEL, label=label, rate=100.0) as loop:
        await action()
        return loop.snapshot()


def status_json(fleet: LocalFleet) -> dict[str, Any]:
    return json.loads(fleetctl(fleet, "--json", "status").stdout)  # type: ignore[no-any-return]


async def test_rollout_pin_label_and_corrupt_version(fleet: LocalFleet, models_dir: Path) -> None:
    # Publish v1: AVAILABLE on every node.
    fleet.publish(MODEL, write_model(models_dir, 1))
    await wait_available(fleet.nodes, MODEL, [1], timeout=120)

    # Publish v2 while Predicts run against every node: zero failures, everyone converges on 2.
    async def publish_v2() -> None:
        fleet.publish(MODEL, write_model(models_dir, 2))
        await wait_available(fleet.nodes, MODEL, [2], timeout=120)

    stats = await under_load(fleet, publish_v2)
    # The control plane fails no call; cold first calls (no warm-up records) are counted apart.
    assert stats.control_plane_failed == 0 and stats.ok > 100, stats.summary()
    assert {v for counts in stats.versions.values() for v in counts} == {1, 2}, stats.summary()

    # Pin back to v1 with fleetctl: converge on 1, still zero failures.
    async def pin_v1() -> None:
        fleetctl(fleet, "pin", MODEL, "1")
        await wait_available(fleet.nodes, MODEL, [1], timeout=120)

    stats = await under_load(fleet, pin_v1)
    assert stats.control_plane_failed == 0, stats.summary()

    # Label stable -> 2: v2 is loaded beside the pinned 1, then the label moves; Predict by label answers 2.
    fleetctl(fleet, "label", MODEL, "stable", "2")
    await wait_available(fleet.nodes, MODEL, [1, 2], timeout=120)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        answers = []
        for node in fleet.nodes:
            try:
                answers.append((await predict_once(node, MODEL, label="stable"))[0])
            except TFServingError:
                answers.append(None)
        if answers == [2] * len(fleet.nodes):
            break
        assert asyncio.get_running_loop().time() < deadline, answers
        await asyncio.sleep(0.5)

    # Corrupt v3 published after unpinning: v2 keeps serving (label too), v3 failed everywhere with the reason.
    fleetctl(fleet, "unpin", MODEL)
    write_corrupt_model(models_dir, 3, kind="truncated_pb")
    fleet.publish(MODEL, models_dir / "3")
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        status = status_json(fleet)
        failed = {node["hostname"]: node["models"].get(MODEL, {}).get("failed", {}) for node in status["nodes"]}
        if all("3" in reasons for reasons in failed.values()) and len(failed) == len(fleet.nodes):
            break
        assert asyncio.get_running_loop().time() < deadline, failed
        await asyncio.sleep(1)
    for reasons in failed.values():
        assert "parse" in reasons["3"].lower() or "proto" in reasons["3"].lower(), reasons
    table = fleetctl(fleet, "status").stdout
    assert "3" in table and "fail" in table.lower()
    for node in fleet.nodes:
        version, _ = await predict_once(node, MODEL)
        assert version == 2
        assert (await predict_once(node, MODEL, label="stable"))[0] == 2


GOLDEN_MODEL = "scorer"


async def test_golden_requests_keep_a_nan_version_from_every_production_call(
    fleet: LocalFleet, models_dir: Path, tmp_path: Path
) -> None:
    """Issue 15: a version that loads but answers NaN is rejected on every node before it takes a call."""
    scorer_dir = models_dir / GOLDEN_MODEL
    fleet.publish(GOLDEN_MODEL, write_model(scorer_dir, 1))
    await wait_available(fleet.nodes, GOLDEN_MODEL, [1], timeout=120)
    requests_file = tmp_path / "golden.json"
    checks = {"finite": True, "outputs": {"y": {"dtype": "DT_FLOAT", "shape": [2, 1], "min": 0, "max": 1000}}}
    requests_file.write_text(
        json.dumps([{"name": "two-rows", "rest": {"instances": [[1.0], [2.0]]}, "checks": checks}])
    )
    fleetctl(fleet, "golden", "add", GOLDEN_MODEL, str(requests_file))
    tested = json.loads(fleetctl(fleet, "--json", "golden", "test", GOLDEN_MODEL).stdout)
    assert tested["passed"] and len(tested["nodes"]) == len(fleet.nodes), tested

    async def publish_bad_then_good() -> None:
        fleet.publish(GOLDEN_MODEL, write_model(scorer_dir, 2, nan_answers=True))
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            nodes = status_json(fleet)["nodes"]
            reasons = [node["models"].get(GOLDEN_MODEL, {}).get("failed", {}).get("2", "") for node in nodes]
            if len(reasons) == len(fleet.nodes) and all("golden request 'two-rows'" in r for r in reasons):
                break
            assert asyncio.get_running_loop().time() < deadline, reasons
            await asyncio.sleep(1)
        assert all("not finite" in r or "nan" in r.lower() for r in reasons), reasons
        fleet.publish(GOLDEN_MODEL, write_model(scorer_dir, 3))
        await wait_available(fleet.nodes, GOLDEN_MODEL, [3], timeout=120)

    targets = {node.hostname: node.grpc_target for node in fleet.nodes}
    with predicting(targets, GOLDEN_MODEL, rate=100.0) as loop:
        await publish_bad_then_good()
        stats = loop.snapshot()
    answered = {v for counts in stats.versions.values() for v in counts}
    assert 2 not in answered and 3 in answered, stats.summary()
    assert stats.control_plane_failed == 0, stats.summary()
    # The set now fails against nothing: v3 serves and passes everywhere.
    tested = json.loads(fleetctl(fleet, "--json", "golden", "test", GOLDEN_MODEL).stdout)
    assert tested["passed"] and {n["result"]["version"] for n in tested["nodes"]} == {3}, tested
