"""A version whose variables are still uploading is never installed, in either completeness mode
(issue 14 item 1: the local fleet's rollout installed one with ``variables.index`` and no shard yet)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import storage

from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_path
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import tree, upload_version, write_fake_model


@pytest.mark.parametrize("marker", [None, "_COMPLETE"])
async def test_index_without_all_shards_waits_for_the_last_shard(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker], marker: str | None
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "old", 1), "ranker", "1")
    if marker:
        bucket.blob(f"models/ranker/1/{marker}").upload_from_string(b"")
    src = write_fake_model(tmp_path / "src", 2, shards=3)
    shards = sorted((src / "variables").glob("variables.data-*"))
    # Parallel upload as `gcloud storage cp -r` does it: small files land first, big shards last.
    for name in ("saved_model.pb", "variables/variables.index"):
        bucket.blob(f"models/ranker/2/{name}").upload_from_filename(str(src / name))
    if marker:
        bucket.blob(f"models/ranker/2/{marker}").upload_from_string(b"")  # written too early
    worker = make_worker(complete_marker=marker)
    local = worker.settings.local_model_directory
    for shard in shards:
        assert await worker.run_now(), worker.last_error
        assert not (local / "ranker" / "2").exists(), f"installed before {shard.name} arrived"
        assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [1]
        assert worker.state.plan is not None
        assert "shard" in worker.state.plan.models["ranker"].remote_incomplete["2"]
        bucket.blob(f"models/ranker/2/variables/{shard.name}").upload_from_filename(str(shard))
    if marker:  # the tool rewrites the marker when it really finishes
        bucket.blob(f"models/ranker/2/{marker}").upload_from_string(b"")
    assert await worker.run_now(), worker.last_error
    assert tree(local / "ranker" / "2") == tree(tmp_path / "src" / "2") | ({marker: b""} if marker else {})
    assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [2]
