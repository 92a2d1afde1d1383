"""One bad version never stalls a node (issue 14 item 2): whatever fails while installing one version
fails that version only — recorded with its bytes' fingerprint, reported, retried only when its bytes
change — and the rest of the pass goes on; desired.json is always written.

Buckets are populated as users do (google-cloud-storage uploads) in the session's fake-gcs-server.
Permission errors are real: root ignores modes, so the model directory is made immutable (chattr +i).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from google.cloud import storage

from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_path
from services.remote_model_puller.failures import FailedVersions
from services.remote_model_puller.status import build_status
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import tree, upload_version, write_fake_model
from tests.remote_model_puller.proxy import gcs_proxy
from tests.support.gcs import FakeGcs

LONG_NAME = "assets/" + "n" * 256  # one name part over ext4's (and most filesystems') 255 bytes


def serving(worker: SyncWorker) -> dict[str, list[int]]:
    desired = LocalDesired.read(desired_path(worker.settings.local_model_directory))
    return {name: target.serve for name, target in desired.models.items()}


def assert_failed_alone(worker: SyncWorker, *, kind: str, reason: str) -> None:
    """ranker 2 failed and is reported; ranker 1 and scorer 5 are installed and served."""
    local = worker.settings.local_model_directory
    assert not (local / "ranker" / "2").is_dir()
    assert (local / "ranker" / "1").is_dir() and (local / "scorer" / "5").is_dir(), "the rest of the pass went on"
    failure = worker.state.failures.entries[("ranker", 2)]
    assert failure.kind == kind and reason in failure.reason, failure
    assert serving(worker) == {"ranker": [1], "scorer": [5]}
    assert [(a.kind, a.model) for a in worker.state.alarms] == [(kind, "ranker")]
    assert worker.metrics.alarm.labels(kind=kind)._value.get() == 1
    status = build_status(worker, ready=True, registrar=None)
    assert reason in status.models["ranker"].failed["2"]
    assert list((local / ".fleet" / "staging").iterdir()) == [], "staging cleared"
    # Recorded on the volume: a restarted puller does not try the same bytes again either.
    assert FailedVersions(local).entries[("ranker", 2)] == failure


def publish(tmp_path: Path, bucket: storage.Bucket) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2), "ranker", "2")
    upload_version(bucket, write_fake_model(tmp_path / "other", 5), "scorer", "5")


@pytest.mark.parametrize(
    ("extra_object", "reason"),
    [("variables", "both a file and a prefix"), (LONG_NAME, "name part of 256 bytes")],
    ids=["file-and-prefix", "name-too-long"],
)
async def test_names_the_filesystem_cannot_hold_fail_their_version_only(
    tmp_path: Path,
    bucket: storage.Bucket,
    make_worker: Callable[..., SyncWorker],
    extra_object: str,
    reason: str,
) -> None:
    publish(tmp_path, bucket)
    bad = bucket.blob(f"models/ranker/2/{extra_object}")
    bad.upload_from_string(b"x")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    assert_failed_alone(worker, kind="install-failed", reason=reason)
    assert worker.metrics.errors.labels(kind="install-error")._value.get() == 1
    requests = worker.downloader.requests
    restarted = make_worker(worker.settings)
    assert await restarted.run_now(), restarted.last_error
    assert restarted.downloader.requests == 0 and worker.downloader.requests == requests, "same bytes: not retried"
    bad.delete()  # the bytes of the version changed: tried again, and it installs
    assert await restarted.run_now(), restarted.last_error
    local = worker.settings.local_model_directory
    assert tree(local / "ranker" / "2") == tree(tmp_path / "src" / "2")
    assert serving(restarted) == {"ranker": [2], "scorer": [5]}
    assert restarted.state.failures.entries == {} and restarted.state.alarms == []


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Nothing can be created in, renamed into or removed from ``path``, even by root."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def file_at_target(path: Path) -> Iterator[None]:
    """A stray file where the version directory goes (left by hand, or by another tool)."""
    (path / "2").write_text("not a version")
    try:
        yield
    finally:
        (path / "2").unlink()


@pytest.mark.parametrize(
    ("obstacle", "reason"),
    [(immutable, "PermissionError"), (file_at_target, "already exists")],
    ids=["permission-denied", "conflict-at-target"],
)
async def test_install_errors_after_download_fail_the_version_only(
    tmp_path: Path,
    bucket: storage.Bucket,
    make_worker: Callable[..., SyncWorker],
    obstacle: Callable[[Path], contextlib.AbstractContextManager[None]],
    reason: str,
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    publish(tmp_path, bucket)
    model_dir = worker.settings.local_model_directory / "ranker"
    with obstacle(model_dir):
        assert await worker.run_now(), worker.last_error
        assert_failed_alone(worker, kind="install-failed", reason=reason)
        requests = worker.downloader.requests
        assert await worker.run_now(), worker.last_error
    assert await worker.run_now(), worker.last_error
    assert worker.downloader.requests == requests, "same bytes: not downloaded again, even once the cause is gone"
    assert not (model_dir / "2").is_dir()
    worker.state.failures.path.unlink()  # the operator fixed the node and clears the record (RUNBOOK)
    assert await worker.run_now(), worker.last_error
    assert tree(model_dir / "2") == tree(tmp_path / "src" / "2")
    assert serving(worker) == {"ranker": [2], "scorer": [5]}
    assert worker.state.failures.entries == {}


async def test_desired_json_is_written_when_the_bucket_fails_mid_pass(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_worker: Callable[..., SyncWorker]
) -> None:
    """A rollback (pin) reaches the node although another model's download fails on a bucket outage."""
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2), "ranker", "2")
    with gcs_proxy(fake_gcs.url) as (url, rules):
        worker = make_worker(storage_emulator_host=url, download_attempts=2)  # the listing goes direct
        assert await worker.run_now(), worker.last_error
        assert serving(worker) == {"ranker": [2]}
        upload_version(bucket, write_fake_model(tmp_path / "other", 5), "scorer", "5")
        bucket.blob("models/_fleet/state.json").upload_from_string(b'{"models": {"ranker": {"pinned": [1]}}}')
        rules.fail_all = 503  # media reads fail: scorer 5 cannot download
        assert not await worker.run_now()
    assert worker.last_error is not None and "503" in worker.last_error
    assert [a.kind for a in worker.state.alarms] == ["bucket-unreachable"]
    assert serving(worker) == {"ranker": [1], "scorer": [5]}, "the pin reached desired.json"
    assert not (worker.settings.local_model_directory / "scorer" / "5").exists()
    assert worker.state.failures.entries == {}, "a bucket outage is not the version's fault"
