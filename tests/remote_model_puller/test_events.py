"""Event-driven sync against the real Pub/Sub emulator and fake-gcs-server's object notifications.

One emulator and one fake-gcs-server (publishing finalize/delete events to TOPIC) are shared by the
module; each test has its own bucket and its own puller (HOSTNAME → its own subscription). The poll
interval and the full reconcile are set far beyond the tests' length: what gets applied, gets applied
by events (the ``listings{scope="full"}`` counter proves no full listing ran).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from services.common.contracts import LocalDesired
from services.common.contracts.local import desired_path
from services.local_fleet.pubsub import PubSubEmulator
from services.remote_model_puller.app import make_downloader
from services.remote_model_puller.events import EventSubscriber, make_subscriber_client
from services.remote_model_puller.local import LocalStore
from services.remote_model_puller.metrics import PullerMetrics
from services.remote_model_puller.settings import Settings
from services.remote_model_puller.status import build_status
from services.remote_model_puller.sync import SyncWorker
from tests.remote_model_puller.conftest import PREFIX, upload_version, write_fake_model
from tests.support.gcs import FakeGcs

PROJECT = "modelfleet-test"
TOPIC = "bucket-events"  # fake-gcs-server notifies it
SILENT_TOPIC = "hand-published"  # nobody but the test publishes here: exact control of deliveries
HOURS = 3600.0
_ids = itertools.count()


@pytest.fixture(scope="module")
def pubsub() -> Iterator[PubSubEmulator]:
    emulator = PubSubEmulator(project=PROJECT)
    emulator.start()  # no emulator installed: fails naming the Debian package
    for topic in (TOPIC, SILENT_TOPIC):
        emulator.create_topic(topic)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def notifying_gcs(pubsub: PubSubEmulator) -> Iterator[FakeGcs]:
    server = FakeGcs(notify=(pubsub.host, PROJECT, TOPIC))
    server.start()
    yield server
    server.close()


@pytest.fixture
def events_bucket(notifying_gcs: FakeGcs) -> storage.Bucket:
    return notifying_gcs.client().create_bucket(f"events-{next(_ids)}")


@pytest.fixture
async def make_puller(
    tmp_path: Path, pubsub: PubSubEmulator, notifying_gcs: FakeGcs, events_bucket: storage.Bucket
) -> AsyncIterator[Callable[..., tuple[SyncWorker, EventSubscriber]]]:
    started: list[tuple[SyncWorker, EventSubscriber]] = []

    def build(**overrides: Any) -> tuple[SyncWorker, EventSubscriber]:
        values: dict[str, Any] = {
            "hostname": f"node-{next(_ids)}",
            "remote_model_directory": f"gs://{events_bucket.name}/{PREFIX}",
            "storage_emulator_host": notifying_gcs.url,
            "local_model_directory": tmp_path / "local",
            "state_dir": tmp_path / "state",
            "quiet_period_seconds": 0,
            "disk_margin_bytes": 0,
            "sync_interval_seconds": HOURS,
            "full_reconcile_seconds": HOURS,
            "events_project": PROJECT,
            "events_topic": TOPIC,
            "events_check_seconds": 0.5,
            "pubsub_emulator_host": pubsub.host,
            "master_url": "http://127.0.0.1:9",
            "gcs_timeout_seconds": 5,
            "http_timeout_seconds": 2,
        }
        values.update(overrides)
        (tmp_path / "state").mkdir(exist_ok=True)
        settings = Settings(**values)
        client = notifying_gcs.client()
        metrics = PullerMetrics()
        worker = SyncWorker(
            settings,
            client=client,
            downloader=make_downloader(settings, None, client),
            store=LocalStore(settings.local_model_directory),
            metrics=metrics,
        )
        events = EventSubscriber(
            settings, worker=worker, metrics=metrics, client=make_subscriber_client(settings, None)
        )
        worker.start()
        events.start()
        started.append((worker, events))
        return worker, events

    yield build
    for worker, events in started:
        await events.stop(grace=2)
        await worker.stop(grace=2)
        worker.downloader.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait (bounded) for ``condition``; the puller works on its own tasks meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def sample(worker: SyncWorker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


def full_listings(worker: SyncWorker) -> float:
    return sample(worker, "modelfleet_puller_listings_total", scope="full")


def targeted_listings(worker: SyncWorker) -> float:
    return sample(worker, "modelfleet_puller_listings_total", scope="targeted")


def serving(worker: SyncWorker) -> dict[str, list[int]]:
    path = desired_path(worker.settings.local_model_directory)
    if not path.exists():
        return {}
    return {name: t.serve for name, t in LocalDesired.read(path).models.items()}


async def in_events_mode(worker: SyncWorker, events: EventSubscriber) -> float:
    """Wait for events mode and the full pass entering it runs; returns the full-listing count then."""
    await until(lambda: events.mode == "events", "events mode")
    await until(lambda: not worker._full_pending and not worker.running and worker.runs > 0, "the entry pass")
    return full_listings(worker)


async def test_version_upload_and_state_document_are_applied_by_events_within_the_quiet_period(
    tmp_path: Path, events_bucket: storage.Bucket, make_puller: Callable[..., tuple[SyncWorker, EventSubscriber]]
) -> None:
    worker, events = make_puller(quiet_period_seconds=1.0)
    full = await in_events_mode(worker, events)

    for v in (1, 2):
        upload_version(
            events_bucket, write_fake_model(tmp_path / "src", v, shards=2, shard_bytes=256), "ranker", str(v)
        )
    # Complete only once the quiet period is over: the timer re-checks it, nothing polls.
    await until(lambda: worker.state.installed.get("ranker", {}).keys() == {1, 2}, "versions 1 and 2 installed")
    assert serving(worker) == {"ranker": [2]}

    document = {"revision": 1, "models": {"ranker": {"pinned": [1]}}}
    events_bucket.blob(f"{PREFIX}/_fleet/state.json").upload_from_string(json.dumps(document))
    await until(lambda: serving(worker) == {"ranker": [1]}, "the pin applied")

    assert full_listings(worker) == full, "applied by targeted listings only"
    assert targeted_listings(worker) >= 2
    await until(lambda: not events.coalescer.waiting, "every event acked")
    shown = build_status(worker, ready=True, registrar=None, events=events).details["events"]
    assert isinstance(shown, dict) and shown["mode"] == "events" and shown["waiting"] == 0
    assert shown["handled"]["synced"] >= 1 and shown["last_lag_seconds"] is not None
    assert shown["subscription"].endswith(f"/subscriptions/modelfleet-puller-{worker.settings.hostname}")


def notification(
    bucket: str, blob: storage.Blob, kind: str = "OBJECT_FINALIZE", generation: int | None = None
) -> dict[str, str]:
    """The attributes GCS (and fake-gcs-server) send with a notification."""
    return {
        "eventType": kind,
        "bucketId": bucket,
        "objectId": blob.name,
        "objectGeneration": str(generation if generation is not None else blob.generation),
        "payloadFormat": "NONE",
    }


def publish(pubsub: PubSubEmulator, messages: list[dict[str, str]]) -> None:
    publisher = pubsub.publisher()
    topic = publisher.topic_path(PROJECT, SILENT_TOPIC)
    futures = [publisher.publish(topic, b"", **attributes) for attributes in messages]
    for future in futures:
        future.result(timeout=30)
    publisher.transport.close()


async def test_a_burst_of_1000_events_for_one_version_costs_one_sync_and_replays_cost_none(
    tmp_path: Path,
    pubsub: PubSubEmulator,
    events_bucket: storage.Bucket,
    make_puller: Callable[..., tuple[SyncWorker, EventSubscriber]],
) -> None:
    worker, events = make_puller(events_topic=SILENT_TOPIC)
    full = await in_events_mode(worker, events)
    upload_version(events_bucket, write_fake_model(tmp_path / "src", 7, shards=3, shard_bytes=128), "ranker", "7")
    blobs = list(events_bucket.list_blobs(prefix=f"{PREFIX}/ranker/7/"))
    burst = [notification(events_bucket.name, random.choice(blobs)) for _ in range(1000)]
    await asyncio.to_thread(publish, pubsub, burst)
    await until(lambda: sum(events.coalescer.handled.values()) == 1000, "1,000 events acked", timeout=60)
    assert worker.state.installed.get("ranker", {}).keys() == {7}
    assert (full_listings(worker), targeted_listings(worker)) == (full, 1), "one listing of the model's prefix"

    # Replayed, duplicated and reordered deliveries of what a pass already saw: acked, no listing.
    replaced = blobs[0]
    old_generation = replaced.generation
    replaced.upload_from_string(b"new bytes")  # gen2 (drift of an installed version: reported, not installed)
    late = [
        notification(events_bucket.name, replaced, "OBJECT_FINALIZE"),  # gen2 first ...
        notification(events_bucket.name, replaced, "OBJECT_DELETE", old_generation),  # ... then gen1's removal
        notification(events_bucket.name, replaced, "OBJECT_FINALIZE", old_generation),  # ... and gen1 again
    ]
    await asyncio.to_thread(publish, pubsub, late)
    await until(lambda: sum(events.coalescer.handled.values()) == 1003, "the late events acked")
    assert targeted_listings(worker) == 2, "gen2 was new: one listing; the stale events cost none"
    await asyncio.to_thread(publish, pubsub, late[::-1] * 3)
    await until(lambda: sum(events.coalescer.handled.values()) == 1012, "the replays acked")
    assert (full_listings(worker), targeted_listings(worker)) == (full, 2)
    assert events.coalescer.handled["ignored"] == 0


async def test_emulator_outage_falls_back_to_polling_loses_no_update_and_events_resume(
    tmp_path: Path,
    pubsub: PubSubEmulator,
    events_bucket: storage.Bucket,
    make_puller: Callable[..., tuple[SyncWorker, EventSubscriber]],
) -> None:
    worker, events = make_puller(sync_interval_seconds=1.0)
    await in_events_mode(worker, events)
    src = tmp_path / "src"

    pubsub.stop()
    try:
        await until(lambda: events.mode == "fallback", "fallback mode")
        assert sample(worker, "modelfleet_puller_sync_mode", mode="fallback") == 1
        assert events.error is not None and "unreachable" in events.error
        upload_version(events_bucket, write_fake_model(src, 1, shards=1, shard_bytes=64), "ranker", "1")
        await until(lambda: 1 in worker.state.installed.get("ranker", {}), "version 1 installed by polling")
    finally:
        pubsub.start()
        for topic in (TOPIC, SILENT_TOPIC):
            pubsub.create_topic(topic)

    full = await in_events_mode(worker, events)  # the subscription is re-created by the puller
    upload_version(events_bucket, write_fake_model(src, 2, shards=1, shard_bytes=64), "ranker", "2")
    await until(lambda: 2 in worker.state.installed.get("ranker", {}), "version 2 installed by events")
    assert full_listings(worker) == full and serving(worker) == {"ranker": [2]}
