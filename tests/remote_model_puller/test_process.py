"""The puller as users run it: a real process killed with SIGKILL mid-download, and buckets filled with
`gcloud storage cp` holding real SavedModels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from google.cloud import storage

from services.common.contracts import LocalDesired, Manifest
from services.common.contracts.local import desired_path, manifest_path
from tests.remote_model_puller.conftest import MiB, tree, upload_version, write_fake_model
from tests.remote_model_puller.proxy import gcs_proxy
from tests.support.gcs import FakeGcs, free_port, gcloud_cp


@contextmanager
def puller_process(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    full_env = {**os.environ, **env, "FLEET_PORT": str(port), "FLEET_HOST": "127.0.0.1", "FLEET_LOG_FORMAT": "json"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.remote_model_puller"], env=full_env, stdout=out, stderr=out
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status(url: str) -> dict[str, object] | None:
    try:
        return httpx.get(f"{url}/v1/status", timeout=2).json()  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return None


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_kill_9_mid_download_leaves_no_partial_version_and_restart_completes(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs
) -> None:
    src = write_fake_model(tmp_path / "src", 3, shards=4, shard_bytes=3 * MiB)
    upload_version(bucket, src, "ranker", "3")
    local = tmp_path / "local"
    env = {
        "REMOTE_MODEL_DIRECTORY": f"gs://{bucket.name}/models",
        "LOCAL_MODEL_DIRECTORY": str(local),
        "FLEET_STATE_DIR": str(tmp_path),
        "FLEET_QUIET_PERIOD_SECONDS": "0",
        "FLEET_DISK_MARGIN_BYTES": "0",
        "FLEET_SYNC_INTERVAL_SECONDS": "1",
        "FLEET_DOWNLOAD_RANGE_BYTES": str(MiB),
        "FLEET_MASTER_URL": f"http://127.0.0.1:{free_port()}",
        "HOSTNAME": "node-kill",
    }
    slow = "models/ranker/3/variables/variables.data-00002-of-00004"
    with gcs_proxy(fake_gcs.url) as (gcs_url, rules):
        rules.before_read[slow] = lambda: time.sleep(30)  # hold one range: the kill lands mid-download
        with puller_process({**env, "STORAGE_EMULATOR_HOST": gcs_url}, tmp_path / "first.log") as (proc, url):

            def in_flight() -> bool:
                status = _status(url)
                models = status.get("models", {}) if status else {}
                return bool(models and models.get("ranker", {}).get("downloads"))  # type: ignore[union-attr]

            _wait(in_flight, 30, "a download in flight")
            staging = local / ".fleet" / "staging"
            assert any(staging.rglob("*.data-*")), "bytes were being written in staging"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert not (local / "ranker" / "3").exists(), "no partial version under LOCAL/<model>/"
    assert not manifest_path(local, "ranker", 3).exists()
    with puller_process({**env, "STORAGE_EMULATOR_HOST": fake_gcs.url}, tmp_path / "second.log") as (_proc, url):
        _wait(lambda: manifest_path(local, "ranker", 3).exists(), 30, "the version to complete after restart")
    assert tree(local / "ranker" / "3") == tree(src)
    assert list((local / ".fleet" / "staging").iterdir()) == [], "debris cleared at start"
    assert LocalDesired.read(desired_path(local)).models["ranker"].serve == [3]


@pytest.mark.slow
def test_real_savedmodels_uploaded_with_gcloud_storage_cp(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs
) -> None:
    from services.remote_model_puller.app import make_downloader
    from services.remote_model_puller.local import LocalStore
    from services.remote_model_puller.metrics import PullerMetrics
    from services.remote_model_puller.settings import Settings
    from services.remote_model_puller.sync import SyncWorker
    from tests.support.savedmodels import write_model

    src = tmp_path / "src"
    with gcs_proxy(fake_gcs.url) as (url, _rules):
        # gcloud asks for the bucket's storageLayout first, which fake-gcs-server lacks: the proxy answers it.
        via_proxy = FakeGcs(port=int(url.rsplit(":", 1)[1]))
        for version in (1, 2):
            write_model(src, version, shards=2)
            gcloud_cp(via_proxy, src / str(version), f"gs://{bucket.name}/models/ranker/{version}")
        via_proxy.close()
    names = sorted(b.name for b in bucket.list_blobs(prefix="models/ranker/2/"))
    assert "models/ranker/2/saved_model.pb" in names and "models/ranker/2/variables/variables.index" in names
    settings = Settings(
        hostname="node-1",
        remote_model_directory=f"gs://{bucket.name}/models",
        storage_emulator_host=fake_gcs.url,
        local_model_directory=tmp_path / "local",
        state_dir=tmp_path,
        quiet_period_seconds=0,
        disk_margin_bytes=0,
    )
    worker = SyncWorker(
        settings,
        client=fake_gcs.client(),
        downloader=make_downloader(settings, None),
        store=LocalStore(settings.local_model_directory),
        metrics=PullerMetrics(),
    )
    import asyncio

    assert asyncio.run(worker.run_now()), worker.last_error
    for version in (1, 2):
        assert tree(settings.local_model_directory / "ranker" / str(version)) == tree(src / str(version))
        assert Manifest.read(manifest_path(settings.local_model_directory, "ranker", version)).objects
