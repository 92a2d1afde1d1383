"""kill -9 of a puller mid-download and of a config_manager mid-reload: restarted, converged, nothing partial."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.tfs import TFServingClient, VersionState, parse_config
from tests.faults.conftest import MODEL, converge, fleet_options, targets
from tests.support.faults import (
    FaultFleet,
    partial_version_problems,
    sidecar_status,
    wait_for,
)
from tests.support.predict_loop import PredictLoop
from tests.support.savedmodels import write_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIG_PADDING = 128 << 20  # a download that takes long enough to be caught in the middle


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FaultFleet]:
    """The fault fleet with one download worker and small reads: a download slow enough to be caught
    in the middle by polling the puller's status (eight workers finish 128 MB between two polls)."""
    options = fleet_options()
    options.extra_env = {"FLEET_DOWNLOAD_WORKERS": "1", "FLEET_DOWNLOAD_BUFFER_BYTES": str(64 * 1024)}
    fleet = FaultFleet(tmp_path / "fleet", options)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def big_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("big-model"), 2, padding_bytes=BIG_PADDING)


def _download_in_flight(status: dict[str, Any]) -> dict[str, Any] | None:
    for download in status.get("models", {}).get(MODEL, {}).get("downloads", []):
        if download["version"] == 2 and 0 < download["bytes_done"] < download["bytes_total"]:
            return dict(download)
    return None


def test_puller_killed_mid_download(fleet: FaultFleet, model_versions: dict[int, Path], big_v2: Path) -> None:
    fleet.publish(MODEL, model_versions[1])
    converge(fleet.nodes, [1])
    victim = fleet.nodes[0]
    with PredictLoop(targets(fleet.nodes), MODEL) as loop:
        fleet.publish(MODEL, big_v2)
        caught = wait_for(
            lambda: _download_in_flight(sidecar_status(victim, "puller")),
            timeout=60,
            interval=0.05,
            what="version 2 downloading on node-1",
        )
        victim.puller.kill()
        # Right after the crash: the half-downloaded bytes sit in staging, nowhere TF Serving could see them.
        left_in_staging = list((victim.model_dir / ".fleet" / "staging").iterdir())
        assert partial_version_problems(victim) == []
        assert sorted(p.name for p in (victim.model_dir / MODEL).iterdir()) == ["1"]
        victim.puller.start()
        victim.puller.wait_healthy(30)
        converge(fleet.nodes, [2], timeout=180)
        loop.wait_answered(victim.hostname, 2, timeout=10)
        stats = loop.stop()
    assert caught["bytes_done"] < caught["bytes_total"]
    assert left_in_staging, "the kill did not land mid-download"
    for node in fleet.nodes:
        assert partial_version_problems(node) == []
    assert list((victim.model_dir / ".fleet" / "staging").iterdir()) == []
    assert stats.control_plane_failed == 0, stats.summary()
    assert stats.versions[victim.hostname][2] > 0, stats.summary()


async def _loading(target: str, version: int) -> bool:
    async with TFServingClient(target) as client:
        statuses = await client.get_model_status(MODEL, timeout=2.0)
    return any(s.version == version and s.state != VersionState.AVAILABLE for s in statuses)


def test_config_manager_killed_mid_reload(fleet: FaultFleet, model_versions: dict[int, Path], big_v2: Path) -> None:
    fleet.publish(MODEL, model_versions[1])
    converge(fleet.nodes, [1])
    victim = fleet.nodes[0]

    def mid_reload() -> bool:
        if not asyncio.run(_loading(victim.grpc_target, 2)):
            return False
        # models.config on disk stays known good: the candidate reached tfserving by RPC only.
        text = victim.config_file.read_text()
        assert not any(e.name == MODEL and 2 in e.versions for e in parse_config(text)), text
        return True

    with PredictLoop(targets(fleet.nodes), MODEL) as loop:
        fleet.publish(MODEL, big_v2)  # big: TF Serving takes a while to load it
        wait_for(mid_reload, timeout=120, interval=0.05, what="version 2 loading in tfserving")
        victim.config_manager.kill()
        victim.config_manager.start()
        victim.config_manager.wait_healthy(30)
        converge(fleet.nodes, [2], timeout=180)
        loop.wait_answered(victim.hostname, 2, timeout=10)
        stats = loop.stop()
    entries = {e.name: e for e in parse_config(victim.config_file.read_text())}
    assert entries[MODEL].versions == (2,)
    for node in fleet.nodes:
        assert partial_version_problems(node) == []
    assert stats.control_plane_failed == 0, stats.summary()
    assert stats.versions[victim.hostname][2] > 0, stats.summary()
