"""Sync passes against fake-gcs-server: what lands on disk, in desired.json and in the manifests."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from pathlib import Path

from google.cloud import storage

from services.common.contracts import LocalDesired, Manifest
from services.common.contracts.local import desired_intent_path, desired_path, manifest_path
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import MiB, tree, upload_version, write_fake_model
from tests.remote_model_puller.proxy import gcs_proxy
from tests.support.gcs import FakeGcs


async def test_installs_latest_and_keeps_previous_canonically(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    src = tmp_path / "src"
    v1, v7 = write_fake_model(src, 1), write_fake_model(src, 7, shards=3)
    upload_version(bucket, v1, "ranker", "1")
    upload_version(bucket, v7, "ranker", "007")
    upload_version(bucket, write_fake_model(src / "old", 0), "ranker", "0")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["1", "7"]
    assert tree(local / "ranker" / "7") == tree(v7)
    assert tree(local / "ranker" / "1") == tree(v1)
    desired = LocalDesired.read(desired_path(local))
    assert desired.models["ranker"].serve == [7] and desired.models["ranker"].keep == [1, 7]
    assert desired.generation is None  # no desired-state document: defaults
    manifest = Manifest.read(manifest_path(local, "ranker", 7))
    assert manifest.total_bytes == sum(len(b) for b in tree(v7).values())
    assert {o.name for o in manifest.objects} == set(tree(v7))
    assert all(o.crc32c for o in manifest.objects)
    assert list((local / ".fleet" / "staging").iterdir()) == []


async def test_unchanged_bucket_means_no_object_reads_and_no_rewrite(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 3), "ranker", "3")
    bucket.blob("models/_fleet/state.json").upload_from_string(b'{"models": {"ranker": {"keep": 0}}}')
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    desired_file = desired_path(worker.settings.local_model_directory)
    first = desired_file.read_bytes()
    reads = worker.metrics.object_reads._value.get()
    assert reads == 1
    for _ in range(3):
        assert await worker.run_now(), worker.last_error
    assert worker.metrics.object_reads._value.get() == reads, "no object read when nothing changed"
    assert worker.downloader.requests == 4, "each object downloaded once"
    assert desired_file.read_bytes() == first, "desired.json not rewritten (same written_at)"


async def test_slow_out_of_order_upload_waits_for_last_shard_and_quiet_period(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    src = write_fake_model(tmp_path / "src", 5, shards=3)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    pb = [p for p in files if p.name == "saved_model.pb"]
    shards = [p for p in files if "data-" in p.name]
    order = [*pb, shards[2], src / "variables" / "variables.index", shards[0], shards[1]]
    worker = make_worker(quiet_period_seconds=1.5)
    target = worker.settings.local_model_directory / "ranker" / "5"
    for path in order:
        bucket.blob(f"models/ranker/5/{path.relative_to(src).as_posix()}").upload_from_filename(str(path))
        assert await worker.run_now(), worker.last_error
        assert not target.exists(), f"installed before {path.name} arrived or before the quiet period"
    assert "quiet period" in worker.state.plan.models["ranker"].remote_incomplete["5"]  # type: ignore[union-attr]
    await asyncio.sleep(1.6)
    assert await worker.run_now(), worker.last_error
    assert tree(target) == tree(src)


async def test_emptied_prefix_unloads_nothing_and_raises_an_alarm(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2), "ranker", "2")
    worker = make_worker()
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    before = desired_path(local).read_bytes()
    for blob in bucket.list_blobs(prefix="models/"):
        blob.delete()
    assert await worker.run_now(), worker.last_error
    assert desired_path(local).read_bytes() == before, "desired.json unchanged"
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["1", "2"]
    assert [(a.kind, a.model, a.severity) for a in worker.state.alarms] == [("mass-removal", "ranker", "critical")]
    assert worker.metrics.alarm.labels(kind="mass-removal")._value.get() == 1
    # Retiring on purpose is the only way out.
    bucket.blob("models/_fleet/state.json").upload_from_string(b'{"models": {"ranker": {"enabled": false}}}')
    assert await worker.run_now(), worker.last_error
    retired = LocalDesired.read(desired_path(local)).models["ranker"]
    assert (retired.enabled, retired.serve, retired.keep) == (False, [], [])
    assert worker.state.alarms == []
    assert sorted(p.name for p in (local / "ranker").iterdir()) == ["1", "2"], "GC is config_manager's job"


async def test_corrupted_object_is_retried_then_version_marked_failed(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2, shard_bytes=3 * MiB + 17), "ranker", "2")
    bad = "models/ranker/2/variables/variables.data-00001-of-00002"
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.corrupt.add(bad)
        worker = make_worker(storage_emulator_host=url, download_attempts=3)
        assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert not (local / "ranker" / "2").exists(), "nothing installed"
    assert (local / "ranker" / "1").is_dir(), "the good version is installed and served instead"
    assert rules.media_reads[bad] == 4 + 2 * 4, "4 ranges, then 2 whole re-reads of 4 ranges"
    assert "crc32c mismatch" in worker.state.failures.reasons("ranker")[2]
    desired = LocalDesired.read(desired_path(local)).models["ranker"]
    assert desired.serve == [1]
    assert [a.kind for a in worker.state.alarms] == ["download-failed"]
    assert list((local / ".fleet" / "staging").iterdir()) == []
    # The same bytes are not downloaded again on the next pass, nor after a restart.
    reads = dict(rules.media_reads)
    assert await worker.run_now()
    restarted = make_worker(storage_emulator_host=url, download_attempts=3)
    assert "crc32c mismatch" in restarted.state.failures.reasons("ranker")[2]
    assert await restarted.run_now(), restarted.last_error
    assert rules.media_reads == reads
    assert restarted.downloader.requests == 0
    assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [1]


async def test_object_served_gzip_transcoded_fails_its_version_only(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_worker: Callable[..., SyncWorker]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2), "ranker", "2")
    upload_version(bucket, write_fake_model(tmp_path / "other", 5), "scorer", "5")
    gzipped = "models/ranker/2/saved_model.pb"  # as `gsutil cp -Z` leaves it: stored gzip, served inflated
    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.extra_headers[gzipped] = {"x-goog-stored-content-encoding": "gzip"}
        worker = make_worker(storage_emulator_host=url)
        assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert not (local / "ranker" / "2").exists()
    assert (local / "ranker" / "1").is_dir() and (local / "scorer" / "5").is_dir(), "the rest of the pass goes on"
    assert "gzip" in worker.state.failures.reasons("ranker")[2]
    assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [1]
    assert rules.media_reads[gzipped] == 1, "refused at once, not retried"


async def test_object_replaced_mid_download_restarts_the_version(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_worker: Callable[..., SyncWorker]
) -> None:
    src = write_fake_model(tmp_path / "src", 4, shard_bytes=2 * MiB)
    upload_version(bucket, src, "ranker", "4")
    name = "models/ranker/4/variables/variables.data-00000-of-00002"
    replacement = os.urandom(2 * MiB)

    def replace() -> None:
        bucket.blob(name).upload_from_string(replacement)

    with gcs_proxy(fake_gcs.url) as (url, rules):
        rules.before_read[name] = replace
        worker = make_worker(storage_emulator_host=url)
        assert await worker.run_now(), worker.last_error
        target = worker.settings.local_model_directory / "ranker" / "4"
        assert not target.exists(), "a version with a replaced object is not installed"
        assert worker.metrics.errors.labels(kind="generation-changed")._value.get() == 1
        assert await worker.run_now(), worker.last_error
    assert (target / "variables" / "variables.data-00000-of-00002").read_bytes() == replacement


async def test_version_with_many_more_objects_than_open_files_allowed(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    src = write_fake_model(tmp_path / "src", 1, shards=1)
    assets = src / "assets"
    assets.mkdir()
    for k in range(150):
        (assets / f"vocab-{k:03d}.txt").write_bytes(os.urandom(500))
    upload_version(bucket, src, "ranker", "1")
    worker = make_worker()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 60, hard))
    try:
        assert await worker.run_now(), worker.last_error
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert tree(worker.settings.local_model_directory / "ranker" / "1") == tree(src)


async def test_intent_names_every_version_before_it_installs_and_desired_follows_each_served_install(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    # config_manager's GC keeps what desired.next.json serves or keeps: it must exist before any install.
    src = tmp_path / "src"
    upload_version(bucket, write_fake_model(src, 1), "ranker", "1")
    upload_version(bucket, write_fake_model(src, 3), "scorer", "3")
    worker = make_worker()
    local = worker.settings.local_model_directory
    seen: list[tuple[str, int, list[int], list[int] | None]] = []
    install = worker.store.install

    def watched_install(staged: Path, model: str, version: int) -> None:
        intent = LocalDesired.read(desired_intent_path(local))
        desired = LocalDesired.read(desired_path(local)) if desired_path(local).exists() else None
        target = desired.models.get(model) if desired else None
        seen.append((model, version, intent.models[model].serve, target.serve if target else None))
        install(staged, model, version)

    worker.store.install = watched_install  # type: ignore[method-assign]
    assert await worker.run_now(), worker.last_error
    assert sorted((model, version) for model, version, _, _ in seen) == [("ranker", 1), ("scorer", 3)]
    assert all(serve == [version] for _, version, serve, _ in seen)  # the intent named it before it landed
    first, second = seen
    assert first[3] is None  # no desired.json before the first install of a fresh node
    assert second[3] == [second[1]]  # written right after the first served install, not at the end
    desired = LocalDesired.read(desired_path(local))
    assert desired.models == LocalDesired.read(desired_intent_path(local)).models
