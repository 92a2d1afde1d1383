"""One real puller sync pass in its own process (so its peak RSS is its own), for bench/download.

    python bench/download/puller_pass.py --emulator URL --remote gs://bucket/set --local DIR --state DIR

Prints one JSON line: pass seconds (list + download + crc32c + fsync + rename + manifests), bytes
installed, and whether the pass succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from google.cloud import storage  # noqa: E402

from services.common.gcs import close_client, make_client  # noqa: E402
from services.remote_model_puller.app import make_downloader  # noqa: E402
from services.remote_model_puller.download import Downloader  # noqa: E402
from services.remote_model_puller.local import LocalStore  # noqa: E402
from services.remote_model_puller.metrics import PullerMetrics  # noqa: E402
from services.remote_model_puller.settings import Settings  # noqa: E402
from services.remote_model_puller.sync import SyncWorker  # noqa: E402


def build_worker(settings: Settings) -> tuple[SyncWorker, Downloader, storage.Client]:
    """The puller's sync worker as the service wires it, without the HTTP app around it."""
    client = make_client(settings)
    downloader = make_downloader(settings, None, client)
    worker = SyncWorker(
        settings,
        client=client,
        downloader=downloader,
        store=LocalStore(settings.local_model_directory),
        metrics=PullerMetrics(),
    )
    return worker, downloader, client


async def one_pass(settings: Settings) -> dict[str, object]:
    worker, downloader, client = build_worker(settings)
    started = time.perf_counter()
    ok = await worker.run_now()
    seconds = time.perf_counter() - started
    downloader.close()
    close_client(client)
    return {
        "ok": ok,
        "error": worker.last_error,
        "seconds": seconds,
        "bytes": worker.metrics.downloaded_bytes._value.get(),
        "versions": worker.metrics.versions_installed._value.get(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--local", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--range-mib", type=int, default=None)
    parser.add_argument("--engine", choices=["native", "sdk"], default="native", help="FLEET_DOWNLOAD_ENGINE")
    args = parser.parse_args()
    tuning: dict[str, int] = {}
    if args.workers:
        tuning["download_workers"] = args.workers
    if args.range_mib:
        tuning["download_range_bytes"] = args.range_mib << 20
    settings = Settings(
        **tuning,
        hostname="bench",
        remote_model_directory=args.remote,
        storage_emulator_host=args.emulator,
        local_model_directory=args.local,
        state_dir=args.state,
        quiet_period_seconds=0,
        disk_margin_bytes=0,
        download_engine=args.engine,
    )
    print(json.dumps(asyncio.run(one_pass(settings))))


if __name__ == "__main__":
    main()
