"""Bad input never crashes the loop nor touches what is installed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from google.cloud import storage

from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_path
from services.common.gcs import make_client
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import tree, upload_version, write_fake_model
from tests.remote_model_puller.proxy import gcs_proxy
from tests.support.gcs import FakeGcs


async def test_unsafe_names_bad_versions_and_bad_model_names_are_ignored(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    good = write_fake_model(tmp_path / "src", 1)
    upload_version(bucket, good, "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "evil", 2), "ranker", "2")
    bucket.blob("models/ranker/2/../../../../escape.txt").upload_from_string(b"x")
    bucket.blob("models/ranker/2/variables/\x07bell").upload_from_string(b"x")
    upload_version(bucket, write_fake_model(tmp_path / "nonnum", 3), "ranker", "v3")
    upload_version(bucket, write_fake_model(tmp_path / "big", 4), "ranker", "99999999999999999999")
    upload_version(bucket, write_fake_model(tmp_path / "badname", 1), "bad name!", "1")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert sorted(p.name for p in local.iterdir()) == [".fleet", "ranker"]
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["1"]
    assert tree(local / "ranker" / "1") == tree(good)
    assert "escape.txt" not in {p.rsplit("/", 1)[-1] for p in tree(tmp_path)}
    plan = worker.state.plan
    assert plan is not None and "unsafe" in plan.models["ranker"].remote_incomplete["2"]
    assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [1]
    assert worker.state.scan is not None and len(worker.state.scan.ignored) >= 2


async def test_ambiguous_version_names_install_neither(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "a", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "b", 7), "ranker", "7")
    upload_version(bucket, write_fake_model(tmp_path / "c", 7), "ranker", "007")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["1"]
    assert worker.state.plan is not None
    assert "ambiguous" in worker.state.plan.models["ranker"].remote_incomplete["7"]


async def test_invalid_desired_state_keeps_the_last_good_one(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    for v in (1, 2, 3):
        upload_version(bucket, write_fake_model(tmp_path / "src", v), "ranker", str(v))
    state = bucket.blob("models/_fleet/state.json")
    state.upload_from_string(b'{"models": {"ranker": {"pinned": [2], "keep": 0}}}')
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    good = desired_path(local).read_bytes()
    state.upload_from_string(b'{"models": {"ranker": {"pinned": [2], "latest": 3}}}')  # both: invalid
    assert await worker.run_now(), worker.last_error
    assert desired_path(local).read_bytes() == good
    assert [a.kind for a in worker.state.alarms] == ["desired-state-invalid"]
    assert worker.state.document_error is not None
    reads = worker.metrics.object_reads._value.get()
    assert await worker.run_now()
    assert worker.metrics.object_reads._value.get() == reads, "the bad generation is not re-read every pass"
    # A restarted puller remembers the last good document (FLEET_STATE_DIR) and still changes nothing.
    restarted = make_worker(worker.settings)
    assert await restarted.run_now(), restarted.last_error
    assert desired_path(local).read_bytes() == good
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["2"]
    state.upload_from_string(b"not json at all")
    assert await restarted.run_now()
    assert desired_path(local).read_bytes() == good


async def test_no_valid_document_ever_changes_nothing(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    bucket.blob("models/_fleet/state.json").upload_from_string(b'{"models": {"x y": {}}}')
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert not (local / "ranker").exists()
    assert not desired_path(local).exists()
    assert worker.state.alarms[0].kind == "desired-state-invalid"


async def test_bucket_missing_or_forbidden_fails_the_pass_and_touches_nothing(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    worker = make_worker()
    assert await worker.run_now()
    local = worker.settings.local_model_directory
    before = desired_path(local).read_bytes()
    missing = make_worker(remote_model_directory="gs://no-such-bucket/models")
    assert not await missing.run_now()
    assert missing.last_error is not None and "BucketNotFound" in missing.last_error
    assert [a.kind for a in missing.state.alarms] == ["bucket-unreachable"]
    assert desired_path(local).read_bytes() == before
    assert (local / "ranker" / "1").is_dir()
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.fail_all = 403
        denied = make_worker(storage_emulator_host=url)
        denied.client = make_client(denied.settings)
        assert not await denied.run_now()
        assert not await denied.run_now()
    assert denied.last_error is not None and "BucketPermissionDenied" in denied.last_error
    assert denied.consecutive_failures == 2
    assert denied.metrics.errors.labels(kind="bucket-permission-denied")._value.get() == 2
    assert denied.metrics.alarm.labels(kind="bucket-unreachable")._value.get() == 1
    assert desired_path(local).read_bytes() == before
    assert (local / "ranker" / "1").is_dir()
