"""Drift, failed.json-driven replacement, the disk check, start-up checks and crash debris."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from google.cloud import storage

from services.common.atomic import atomic_write_json
from services.common.contracts import FailedDocument, FailedVersion, Manifest
from services.common.contracts.local import failed_path, manifest_path
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import tree, upload_version, write_fake_model

SHARD = "variables/variables.data-00000-of-00002"


async def _installed(tmp_path: Path, bucket: storage.Bucket, worker: SyncWorker) -> Path:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    assert await worker.run_now(), worker.last_error
    return worker.settings.local_model_directory / "ranker" / "1"


async def test_drift_is_reported_but_installed_bytes_stay(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    worker = make_worker()
    version_dir = await _installed(tmp_path, bucket, worker)
    before = tree(version_dir)
    bucket.blob(f"models/ranker/1/{SHARD}").upload_from_string(os.urandom(4096))
    assert await worker.run_now(), worker.last_error
    assert worker.state.plan is not None and worker.state.plan.models["ranker"].drift == [1]
    assert tree(version_dir) == before, "immutable once installed"


async def test_failed_version_whose_bytes_changed_is_replaced_whole(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    worker = make_worker()
    version_dir = await _installed(tmp_path, bucket, worker)
    local = worker.settings.local_model_directory
    old = Manifest.read(manifest_path(local, "ranker", 1))
    failed = FailedDocument(
        versions=[FailedVersion(model="ranker", version=1, message="could not load", fingerprint=old.fingerprint())]
    )
    atomic_write_json(failed_path(local), failed)
    assert await worker.run_now()
    assert Manifest.read(manifest_path(local, "ranker", 1)).fingerprint() == old.fingerprint(), "same bytes: no retry"
    fixed = os.urandom(4096)
    bucket.blob(f"models/ranker/1/{SHARD}").upload_from_string(fixed)
    inode = version_dir.stat().st_ino
    assert await worker.run_now(), worker.last_error
    assert (version_dir / SHARD).read_bytes() == fixed
    assert version_dir.stat().st_ino != inode, "swapped as a whole directory, not edited in place"
    new = Manifest.read(manifest_path(local, "ranker", 1))
    assert new.fingerprint() != old.fingerprint()
    assert list((local / ".fleet" / "trash").iterdir()) == []
    assert list((local / ".fleet" / "staging").iterdir()) == []


async def test_version_that_does_not_fit_does_not_start(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    worker = make_worker(disk_margin_bytes=1 << 60)
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert not (local / "ranker").exists()
    assert list((local / ".fleet" / "staging").iterdir()) == []
    assert [(a.kind, a.model) for a in worker.state.alarms] == [("disk-full", "ranker")]
    assert "not started" in worker.state.alarms[0].message
    assert worker.metrics.alarm.labels(kind="disk-full")._value.get() == 1


async def test_restart_clears_debris_and_repairs_a_truncated_version(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    worker = make_worker()
    version_dir = await _installed(tmp_path, bucket, worker)
    good = tree(version_dir)
    local = worker.settings.local_model_directory
    debris = local / ".fleet" / "staging" / "ranker-2-dead"
    debris.mkdir(parents=True)
    (debris / "saved_model.pb").write_bytes(b"partial")
    os.truncate(version_dir / SHARD, 10)  # damage from outside (disk, operator)
    restarted = make_worker(worker.settings)
    assert await restarted.run_now(), restarted.last_error
    assert not debris.exists()
    assert tree(version_dir) == good, "re-downloaded from the unchanged bucket and swapped in"


async def test_version_renamed_without_manifest_is_adopted_after_checking_crc32c(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    worker = make_worker()
    await _installed(tmp_path, bucket, worker)
    local = worker.settings.local_model_directory
    manifest_path(local, "ranker", 1).unlink()  # killed between the rename and the manifest write
    restarted = make_worker(worker.settings)
    assert await restarted.run_now(), restarted.last_error
    assert Manifest.read(manifest_path(local, "ranker", 1)).total_bytes > 0
    assert restarted.downloader.requests == 0, "adopted without downloading again"


def test_replacing_an_installed_version_never_leaves_it_missing(tmp_path: Path) -> None:
    # TF Serving polls the base path every second: a version absent for one poll is unloaded.
    store = LocalStore(tmp_path)
    store.prepare()

    def staged(content: str) -> Path:
        directory = store.staging / f"v-{content}"
        (directory / "variables").mkdir(parents=True)
        (directory / "saved_model.pb").write_text(content)
        return directory

    store.install(staged("0"), "m", 1)
    graph = tmp_path / "m" / "1" / "saved_model.pb"
    stop, misses, looks = threading.Event(), [0], [0]

    def watch() -> None:
        while not stop.is_set():
            looks[0] += 1
            if not graph.exists():
                misses[0] += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(1, 101):
            store.replace(staged(str(round_)), "m", 1)
    finally:
        stop.set()
        watcher.join()
    assert graph.read_text() == "100"
    assert looks[0] > 100 and misses[0] == 0, (looks, misses)
    assert list(store.staging.iterdir()) == [] and not any(store.trash.iterdir())
