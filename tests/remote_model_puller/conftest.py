"""Fixtures of the puller tests: settings against the session's fake-gcs-server, a sync worker driven
by hand, and SavedModel-shaped version directories (the puller never loads models, so plain files named
like a SavedModel are enough for most tests; real ones are used where users' tools are involved)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from services.remote_model_puller.app import make_downloader
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.sync import SyncWorker
from tests.support.gcs import FakeGcs

MiB = 1 << 20
PREFIX = "models"


def write_fake_model(root: Path, version: int | str, *, shards: int = 2, shard_bytes: int = 4096) -> Path:
    """``root/<version>/`` shaped like a SavedModel with ``shards`` variable shards of random bytes."""
    version_dir = root / str(version)
    (version_dir / "variables").mkdir(parents=True, exist_ok=True)
    (version_dir / "saved_model.pb").write_bytes(os.urandom(1000))
    (version_dir / "variables" / "variables.index").write_bytes(os.urandom(200))
    for k in range(shards):
        name = f"variables.data-{k:05d}-of-{shards:05d}"
        (version_dir / "variables" / name).write_bytes(os.urandom(shard_bytes))
    return version_dir


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name → bytes)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def upload_version(bucket: storage.Bucket, local_version_dir: Path, model: str, dir_name: str) -> None:
    for path in sorted(p for p in local_version_dir.rglob("*") if p.is_file()):
        name = f"{PREFIX}/{model}/{dir_name}/{path.relative_to(local_version_dir).as_posix()}"
        bucket.blob(name).upload_from_filename(str(path))


@pytest.fixture
def make_settings(tmp_path: Path, fake_gcs: FakeGcs, bucket: storage.Bucket) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "hostname": "node-1",
            "remote_model_directory": f"gs://{bucket.name}/{PREFIX}",
            "storage_emulator_host": fake_gcs.url,
            "local_model_directory": tmp_path / "local",
            "state_dir": tmp_path / "state",
            "quiet_period_seconds": 0,
            "disk_margin_bytes": 0,
            "sync_interval_seconds": 0.2,
            "download_range_bytes": MiB,
            "download_buffer_bytes": 256 * 1024,
            "master_url": "http://127.0.0.1:9",
            "gcs_timeout_seconds": 5,
        }
        values.update(overrides)
        (tmp_path / "state").mkdir(exist_ok=True)
        return Settings(**values)

    return build


@pytest.fixture
async def make_worker(
    make_settings: Callable[..., Settings], gcs_client: storage.Client
) -> AsyncIterator[Callable[..., SyncWorker]]:
    made: list[SyncWorker] = []

    def build(settings: Settings | None = None, **overrides: Any) -> SyncWorker:
        settings = settings or make_settings(**overrides)
        worker = SyncWorker(
            settings,
            client=gcs_client,
            downloader=make_downloader(settings, None, gcs_client),
            store=LocalStore(settings.local_model_directory),
            metrics=PullerMetrics(),
        )
        made.append(worker)
        return worker

    yield build
    for worker in made:
        await worker.stop(grace=2)
        worker.downloader.close()
