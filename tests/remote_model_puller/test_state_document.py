"""The state document is precious on the nodes too: once a generation has been seen, a missing or reset
document keeps the last good one ruling (retired models stay retired) and raises the alarm."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from google.cloud import storage
from prometheus_client import generate_latest

from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_path
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import upload_version, write_fake_model

STATE = "models/_fleet/state.json"


def serving(worker: SyncWorker) -> dict[str, list[int]]:
    desired = LocalDesired.read(desired_path(worker.settings.local_model_directory))
    return {name: target.serve for name, target in sorted(desired.models.items())}


def alarm_gauge(worker: SyncWorker, kind: str) -> str:
    text = generate_latest(worker.metrics.registry).decode()
    return next(line for line in text.splitlines() if line.startswith(f'modelfleet_puller_alarm{{kind="{kind}"}}'))


async def test_missing_or_reset_document_keeps_the_last_good_one_until_master_writes_a_new_revision(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    for v in (1, 2):
        upload_version(bucket, write_fake_model(tmp_path / "src", v, shards=1, shard_bytes=64), "ranker", str(v))
    upload_version(bucket, write_fake_model(tmp_path / "old", 1, shards=1, shard_bytes=64), "old", "1")
    state = bucket.blob(STATE)
    state.upload_from_string(
        json.dumps({"revision": 2, "models": {"ranker": {"pinned": [1]}, "old": {"enabled": False}}})
    )
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    good = {"old": [], "ranker": [1]}
    assert serving(worker) == good and worker.state.alarms == []

    state.delete()  # e.g. a lifecycle rule or a wrong `gcloud storage rm`
    assert await worker.run_now(), worker.last_error
    assert serving(worker) == good, "the retired model did not come back, the pin still rules"
    assert [a.kind for a in worker.state.alarms] == ["desired-state-missing"]
    assert "fleetctl state" in worker.state.alarms[0].message
    assert alarm_gauge(worker, "desired-state-missing").endswith(" 1.0")

    state.upload_from_string(b'{"models": {}}')  # a fresh document not written by master: revision 0
    assert await worker.run_now(), worker.last_error
    assert serving(worker) == good and [a.kind for a in worker.state.alarms] == ["desired-state-reset"]
    restarted = make_worker(worker.settings)  # the last good document survives a restart (FLEET_STATE_DIR)
    assert await restarted.run_now(), restarted.last_error
    assert serving(restarted) == good and [a.kind for a in restarted.state.alarms] == ["desired-state-reset"]

    # The admin decided (fleetctl state accept): master writes a new revision, every puller follows it.
    state.upload_from_string(json.dumps({"revision": 3, "models": {"old": {"enabled": False}}}))
    assert await restarted.run_now(), restarted.last_error
    assert serving(restarted) == {"old": [], "ranker": [2]} and restarted.state.alarms == []
    assert alarm_gauge(restarted, "desired-state-reset").endswith(" 0.0")


async def test_no_document_ever_seen_means_defaults_without_an_alarm(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1, shards=1, shard_bytes=64), "ranker", "1")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    assert serving(worker) == {"ranker": [1]} and worker.state.alarms == []
