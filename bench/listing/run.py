"""bench/listing: a sync poll over an unchanged bucket — list calls, object reads, wall time.

1,000 models x 20 versions (3 objects each: saved_model.pb, variables.index, one data shard = 60,000
objects) plus a desired-state document, preloaded into fake-gcs-server (filesystem backend). A real SyncWorker
makes a first pass (installs latest + previous of every model), then the measured poll with no change:

- list calls: goal <= 1 page per 1,000 objects;
- object reads (document reads + media reads): goal 0;
- wall time of the poll, as context.

Then the same worker runs with bucket notifications (fake-gcs-server → Pub/Sub emulator → its own
subscription), as the service does (sync loop + subscriber, full reconcile every 600 s):

- steady state: list calls during ``--window`` seconds of an unchanged bucket beyond the entry full
  pass: goal 0; per hour that is only the full reconciles (6 x the pages of one full listing), against
  3600 / FLEET_SYNC_INTERVAL_SECONDS (30 s) polls without events;
- one new version uploaded: the list calls it costs (a listing of that model's prefix only).

    .venv/bin/python bench/listing/run.py            # 1,000 x 20, 60 s steady-state window
    .venv/bin/python bench/listing/run.py --smoke    # 20 x 5, 3 s window
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.download.emulator import PreloadedEmulator  # noqa: E402
from bench.download.puller_pass import build_worker  # noqa: E402
from services.common.gcs import close_client  # noqa: E402
from services.local_fleet.pubsub import PubSubEmulator  # noqa: E402
from services.remote_model_puller.events import EventSubscriber, make_subscriber_client  # noqa: E402
from services.remote_model_puller.settings import Settings  # noqa: E402
from services.remote_model_puller.sync import SyncWorker  # noqa: E402

BUCKET = "listing"
PROJECT = "bench-listing"
TOPIC = "bucket-events"
POLL_INTERVAL = 30.0  # FLEET_SYNC_INTERVAL_SECONDS' default: the polling figure per hour
RECONCILE = 600.0  # FLEET_FULL_RECONCILE_SECONDS' default
FILES = ("saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001")


def seed(data_dir: Path, models: int, versions: int) -> int:
    """Write every object as a file the emulator loads at start (``-data``); returns the count.
    (Uploading 60,000 objects through the API into the memory backend takes far too long: its inserts
    and lookups scan every object. The filesystem backend loads them in about a minute.)"""
    root = data_dir / BUCKET / "models"
    count = 0
    for m in range(models):
        for v in range(1, versions + 1):
            (root / f"model-{m:04d}" / str(v) / "variables").mkdir(parents=True)
            for name in FILES:
                path = root / f"model-{m:04d}" / str(v) / name
                path.write_bytes(path.as_posix().encode())
                count += 1
    (root / "_fleet").mkdir()
    (root / "_fleet" / "state.json").write_text(json.dumps({"models": {"model-0000": {"keep": 2}}}))
    return count + 1


def list_calls(worker: SyncWorker) -> int:
    return int(worker.metrics.registry.get_sample_value("modelfleet_puller_list_pages_total") or 0)


async def wait(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def with_events(worker: SyncWorker, client: Any, window: float) -> dict[str, Any]:
    """The worker in its loop with the subscriber: list calls in a quiet window, then for one upload."""
    worker.interval = POLL_INTERVAL
    events = EventSubscriber(
        worker.settings, worker=worker, metrics=worker.metrics, client=make_subscriber_client(worker.settings, None)
    )
    worker.start()
    events.start()
    try:
        await wait(lambda: events.mode == "events", "events mode")
        await wait(lambda: not worker._full_pending and not worker.running, "the entry pass")
        before = list_calls(worker)
        await asyncio.sleep(window)  # the steady state measured: nothing should list
        steady = list_calls(worker) - before
        bucket = client.bucket(BUCKET)
        for name in FILES:
            await asyncio.to_thread(bucket.blob(f"models/model-0001/99/{name}").upload_from_string, name.encode())
        await wait(lambda: 99 in worker.state.installed.get("model-0001", {}), "version 99 installed")
        upload = list_calls(worker) - before - steady
    finally:
        await events.stop(grace=5)
        await worker.stop(grace=5)
    return {"window_seconds": window, "steady_list_calls": steady, "upload_list_calls": upload}


async def measure(url: str, scratch: Path, *, pubsub: str, window: float) -> dict[str, Any]:
    settings = Settings(
        hostname="bench",
        remote_model_directory=f"gs://{BUCKET}/models",
        storage_emulator_host=url,
        local_model_directory=scratch / "local",
        state_dir=scratch,
        quiet_period_seconds=0,
        disk_margin_bytes=0,
        download_workers=16,
        events_project=PROJECT,
        events_topic=TOPIC,
        pubsub_emulator_host=pubsub,
        events_check_seconds=2,
        full_reconcile_seconds=RECONCILE,
        sync_interval_seconds=POLL_INTERVAL,
    )
    worker, downloader, client = build_worker(settings)
    started = time.perf_counter()
    assert await worker.run_now(), worker.last_error
    first = {
        "seconds": time.perf_counter() - started,
        "pages": worker.state.listing_pages,
        "media_reads": downloader.requests,
        "document_reads": worker.documents.reads,
    }
    media, documents = downloader.requests, worker.documents.reads
    started = time.perf_counter()
    assert await worker.run_now(), worker.last_error
    poll = {
        "seconds": time.perf_counter() - started,
        "listing_seconds": worker.state.listing_seconds,
        "objects_listed": worker.state.listing_objects,
        "list_calls": worker.state.listing_pages,
        "object_reads": (downloader.requests - media) + (worker.documents.reads - documents),
    }
    events = await with_events(worker, client, window)
    downloader.close()
    close_client(client)
    return {"first_pass": first, "unchanged_poll": poll, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--models", type=int, help="override the number of models")
    parser.add_argument("--versions", type=int, help="override the number of versions per model")
    parser.add_argument("--window", type=float, help="seconds of steady state measured with events")
    args = parser.parse_args()
    models, versions = (20, 5) if args.smoke else (1000, 20)
    window = args.window or (3.0 if args.smoke else 60.0)
    models, versions = args.models or models, args.versions or versions
    scratch = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    try:
        started = time.perf_counter()
        objects = seed(scratch / "data", models, versions)
        pubsub = PubSubEmulator(project=PROJECT, log_dir=scratch)
        pubsub.start()
        try:
            pubsub.create_topic(TOPIC)
            emulator = PreloadedEmulator(scratch / "data", backend="filesystem", notify=(pubsub.host, PROJECT, TOPIC))
            try:
                print(f"emulator loaded {objects} objects in {time.perf_counter() - started:.1f} s", flush=True)
                result = asyncio.run(measure(emulator.url, scratch, pubsub=pubsub.host, window=window))
            finally:
                emulator.close()
        finally:
            pubsub.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    poll = result["unchanged_poll"]
    page_goal = math.ceil(objects / 1000)
    result.update(
        models=models,
        versions=versions,
        objects=objects,
        goals={
            "list_calls_max": page_goal,
            "list_calls_met": poll["list_calls"] <= page_goal,
            "object_reads_max": 0,
            "object_reads_met": poll["object_reads"] == 0,
            "events_steady_list_calls_met": result["events"]["steady_list_calls"] == 0,
        },
    )
    events = result["events"]
    events["per_hour_with_events"] = round(3600 / RECONCILE) * poll["list_calls"]
    events["per_hour_polling"] = round(3600 / POLL_INTERVAL) * poll["list_calls"]
    first = result["first_pass"]
    print(f"{models} models x {versions} versions = {objects} objects")
    print(f"first pass: {first['seconds']:.1f} s, {first['pages']} pages, {first['media_reads']} media reads")
    print(
        f"unchanged poll: {poll['list_calls']} list calls (goal <= {page_goal}), "
        f"{poll['object_reads']} object reads (goal 0), {poll['seconds']:.2f} s wall "
        f"({poll['listing_seconds']:.2f} s listing)"
    )
    print(
        f"with events: {events['steady_list_calls']} list calls in {window:g} s of steady state beyond the full "
        f"reconcile (goal 0); per hour {events['per_hour_with_events']} (the reconciles, every {RECONCILE:g} s) "
        f"vs {events['per_hour_polling']} polling every {POLL_INTERVAL:g} s; a new version cost "
        f"{events['upload_list_calls']} list calls (its model's prefix)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
