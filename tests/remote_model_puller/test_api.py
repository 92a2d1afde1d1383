"""The puller as a real HTTP service (uvicorn on a free port) with a stand-in master."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from google.cloud import storage

from services.common.contracts import SidecarStatus
from services.remote_model_puller.app import create_app
from services.remote_model_puller.settings import Settings
from tests.remote_model_puller.conftest import MiB, upload_version, write_fake_model
from tests.remote_model_puller.proxy import gcs_proxy
from tests.remote_model_puller.servers import StandInMaster, serve_app
from tests.support.gcs import FakeGcs


async def _until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_service_syncs_reports_and_registers(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, make_settings: Callable[..., Settings]
) -> None:
    upload_version(bucket, write_fake_model(tmp_path / "src", 1), "ranker", "1")
    upload_version(bucket, write_fake_model(tmp_path / "src", 2, shard_bytes=2 * MiB), "ranker", "2")
    slow = "models/ranker/2/variables/variables.data-00001-of-00002"
    token = tmp_path / "token"
    token.write_text("fleet-token")
    master = StandInMaster(token="fleet-token")
    with (
        gcs_proxy(fake_gcs.url) as (gcs_url, rules),
        serve_app(master.app()) as master_url,
    ):
        rules.before_read[slow] = lambda: time.sleep(1.5)
        settings = make_settings(
            storage_emulator_host=gcs_url, master_url=master_url, token_file=token, register_interval_seconds=0.5
        )
        with serve_app(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                assert (await http.get("/healthz")).status_code == 200

                async def status() -> SidecarStatus:
                    fleet = {"Authorization": "Bearer fleet-token"}
                    return SidecarStatus.model_validate((await http.get("/v1/status", headers=fleet)).json())

                seen_download = None
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    current = await status()
                    model = current.models.get("ranker")
                    if model and model.downloads:
                        seen_download = model.downloads[0]
                        break
                    await asyncio.sleep(0.05)
                assert seen_download is not None, "a download in flight shows in status"
                assert seen_download.version == 2 and seen_download.bytes_total > 4 * MiB
                await _until(lambda: (settings.local_model_directory / "ranker" / "2").is_dir())
                ready = await http.get("/readyz")
                for _ in range(100):
                    if ready.status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                    ready = await http.get("/readyz")
                assert ready.status_code == 200
                final = await status()
                ranker = final.models["ranker"]
                assert (ranker.serve, ranker.keep, ranker.on_disk, ranker.remote_complete) == (
                    [2],
                    [1, 2],
                    [1, 2],
                    [1, 2],
                )
                assert final.role == "puller" and final.hostname == "node-1" and final.ready
                assert final.last_success_at is not None and final.last_error is None

                assert (await http.post("/v1/sync")).status_code == 401
                assert (await http.get("/v1/status")).status_code == 401  # reads need the fleet token too
                forbidden = await http.post("/v1/sync", headers={"Authorization": "Bearer nope"})
                assert forbidden.status_code == 401
                assert forbidden.headers["content-type"].startswith("application/problem+json")
                auth = {"Authorization": "Bearer fleet-token"}
                bad = await http.post("/v1/sync", params={"model": "../etc"}, headers=auth)
                assert bad.status_code == 422
                runs_before = final.details["passes_completed"]
                accepted = await http.post("/v1/sync", params={"model": "ranker"}, headers=auth)
                assert accepted.status_code == 202 and accepted.json() == {"accepted": True, "model": "ranker"}
                for _ in range(100):
                    if (await status()).details["passes_completed"] > runs_before:  # type: ignore[operator]
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("POST /v1/sync did not trigger a pass")

                metrics = (await http.get("/metrics")).text
                assert "modelfleet_puller_downloaded_bytes_total" in metrics
                assert 'modelfleet_puller_alarm{kind="mass-removal"} 0.0' in metrics
                assert "modelfleet_puller_last_success_timestamp_seconds" in metrics
    assert master.registrations, "registered with master"
    assert master.registrations[0].role == "puller" and master.auth_headers[0] == "Bearer fleet-token"


async def test_service_runs_without_master_and_without_bucket(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(remote_model_directory="gs://no-such-bucket/models", register_interval_seconds=0.2)
    with serve_app(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            for _ in range(200):
                body = (await http.get("/v1/status")).json()
                if body["last_error"]:
                    break
                await asyncio.sleep(0.05)
            assert "BucketNotFound" in body["last_error"]
            assert [a["kind"] for a in body["alarms"]] == ["bucket-unreachable"]
            assert body["details"]["registered"] is False
            assert (await http.get("/readyz")).status_code == 200, "ready: a pass finished, the outage is reported"
            assert (await http.get("/healthz")).status_code == 200


async def test_health_names_a_stuck_sync_pass_and_an_unwritable_state_dir_never_the_bucket(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        remote_model_directory="gs://no-such-bucket/models",
        sync_interval_seconds=0.1,
        health_min_stale_seconds=0.5,
        health_stuck_seconds=0.5,
        health_probe_cache_seconds=0,
    )
    app = create_app(settings)
    release = threading.Event()
    release.set()

    async def until_health(status: int, http: httpx.AsyncClient) -> dict:
        deadline = time.monotonic() + 15
        while True:
            response = await http.get("/healthz")
            if response.status_code == status:
                return response.json()
            assert time.monotonic() < deadline, f"/healthz never answered {status}: {response.text}"
            await asyncio.sleep(0.05)

    with serve_app(app) as url:
        worker = app.state.runtime.worker
        run_once = worker.run_once

        async def maybe_stuck(targets: frozenset[str] | None = None) -> None:
            while not release.is_set():  # the server's loop runs in another thread
                await asyncio.sleep(0.02)
            await run_once(targets)

        worker.run_once = maybe_stuck
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            await _until(lambda: worker.failures >= 3)
            body = await until_health(200, http)  # the bucket is gone: not the puller's ill health
            assert set(body["checks"]) == {"sync", "registration", "state_dir"}
            assert "BucketNotFound" in body["checks"]["sync"]["detail"]
            release.clear()
            red = await until_health(503, http)
            assert red["failed"] == ["sync"] and "worker stuck" in red["detail"]
            release.set()
            await until_health(200, http)
            settings.state_dir.rmdir()
            settings.state_dir.write_text("not a directory\n")
            red = await until_health(503, http)
            assert red["failed"] == ["state_dir"] and "not writable" in red["detail"]
