"""/healthz = "alive and making progress": a stuck pass, a loop that stopped finishing passes or an
unwritable state dir turn it red (503 problem+json naming the check); a *failing* pass does not."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.common.health import Health, HealthBounds, WritableDir, health_response
from services.common.worker import PeriodicWorker

REPO_ROOT = Path(__file__).resolve().parents[2]
SIDECAR_UID = 10001

# Small bounds so the tests are quick: stale after max(3 x interval, 0.3 s), stuck after 0.3 s quiet.
BOUNDS = HealthBounds(missed_passes=3, min_stale_seconds=0.3, stuck_seconds=0.3)


class Gated(PeriodicWorker):
    """A worker whose pass blocks on ``gate`` while ``block`` is set, and fails while ``fail`` is."""

    name = "gated"

    def __init__(self, **kw: float) -> None:
        super().__init__(**kw)
        self.gate = asyncio.Event()
        self.block = False
        self.fail = False

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        if self.block:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("bucket unreachable")


class Sleepy(Gated):
    """A loop that stops scheduling passes after its first one (a bug a restart fixes)."""

    def _next_delay(self) -> float:
        return 3600.0


def app_for(health: Health) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return health_response(await health.run())

    return app


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[Health], httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []

    def build(health: Health) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(health)), base_url="http://test")
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def until_status(client: httpx.AsyncClient, status: int, timeout: float = 10.0) -> httpx.Response:
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get("/healthz")
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)


async def test_a_stuck_pass_turns_health_red_and_releasing_it_green(
    client_for: Callable[[Health], httpx.AsyncClient],
) -> None:
    worker = Gated(interval=0.05, jitter=0.0)
    health = Health(BOUNDS)
    health.add_worker("sync", worker)
    client = client_for(health)
    worker.start()
    try:
        ok = await until_status(client, 200)
        assert ok.json()["status"] == "ok" and ok.json()["checks"]["sync"]["ok"] is True
        worker.block = True
        red = await until_status(client, 503)
        assert red.headers["content-type"].startswith("application/problem+json")
        body = red.json()
        assert body["failed"] == ["sync"] and "worker stuck" in body["detail"]
        assert body["checks"]["sync"]["ok"] is False
        worker.block = False
        worker.gate.set()
        green = await until_status(client, 200)
        assert green.json()["checks"]["sync"]["ok"] is True
    finally:
        worker.gate.set()
        await worker.stop()


async def test_a_pass_that_reports_progress_is_slow_not_stuck(
    client_for: Callable[[Health], httpx.AsyncClient],
) -> None:
    worker = Gated(interval=0.05, jitter=0.0)
    health = Health(BOUNDS)
    health.add_worker("sync", worker)
    client = client_for(health)
    worker.block = True
    worker.start()
    try:
        # Running for several stuck bounds, but progressing (bytes arriving, steps done): healthy.
        for _ in range(12):
            worker.note_progress()
            assert (await client.get("/healthz")).status_code == 200
            await asyncio.sleep(0.1)
        assert worker.running
    finally:
        worker.gate.set()
        await worker.stop()


async def test_failing_passes_are_not_ill_health(client_for: Callable[[Health], httpx.AsyncClient]) -> None:
    # The documented choice: a bucket outage fails every pass, but the loop is alive and retrying;
    # restarting the sidecar would not fix the bucket.
    worker = Gated(interval=0.05, jitter=0.0)
    worker.fail = True
    health = Health(BOUNDS)
    health.add_worker("sync", worker)
    client = client_for(health)
    worker.start()
    try:
        await asyncio.sleep(1.0)  # > 3 stale bounds
        assert worker.failures >= 3 and worker.last_success_at is None
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert "bucket unreachable" in response.json()["checks"]["sync"]["detail"]
    finally:
        await worker.stop()


async def test_no_pass_finished_within_k_intervals_turns_health_red(
    client_for: Callable[[Health], httpx.AsyncClient],
) -> None:
    worker = Sleepy(interval=0.05, jitter=0.0)
    health = Health(BOUNDS)
    health.add_worker("sync", worker)
    client = client_for(health)
    worker.start()
    try:
        await until_status(client, 200)
        red = await until_status(client, 503)
        assert red.json()["failed"] == ["sync"] and "worker stale" in red.json()["detail"]
        worker.trigger()  # a pass finishes again: green
        await until_status(client, 200)
    finally:
        await worker.stop()


async def broken_pass(targets: frozenset[str] | None) -> bool:
    raise RuntimeError("bug in the loop")


async def test_a_loop_that_ended_is_red_at_once(client_for: Callable[[Health], httpx.AsyncClient]) -> None:
    worker = Gated(interval=3600, jitter=0.0)
    health = Health(HealthBounds(missed_passes=3, min_stale_seconds=3600, stuck_seconds=3600))
    health.add_worker("sync", worker)
    client = client_for(health)
    worker.start()
    try:
        await until_status(client, 200)
        worker._run_pass = broken_pass  # type: ignore[method-assign]  # an exception escapes the loop
        worker.trigger()
        red = await until_status(client, 503)
        assert "worker loop ended" in red.json()["detail"]
    finally:
        await worker.stop()


async def test_a_state_dir_that_is_not_a_writable_dir_turns_health_red(
    tmp_path: Path, client_for: Callable[[Health], httpx.AsyncClient]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    health = Health(BOUNDS)
    health.add_writable("state_dir", WritableDir(state, cache_seconds=0))
    client = client_for(health)
    ok = await client.get("/healthz")
    assert ok.status_code == 200 and ok.json()["checks"]["state_dir"]["ok"] is True
    assert list(state.iterdir()) == []  # the probe cleans up after itself
    state.rmdir()
    state.write_text("not a directory\n")
    red = await client.get("/healthz")
    assert red.status_code == 503 and red.json()["failed"] == ["state_dir"]
    assert str(state) in red.json()["detail"] and "not writable" in red.json()["detail"]
    state.unlink()
    state.mkdir()
    assert (await client.get("/healthz")).status_code == 200


async def test_the_state_dir_probe_is_cached(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    cached = WritableDir(tmp_path / "gone", cache_seconds=3600)
    assert (await cached.check()).ok
    (tmp_path / "gone").rmdir()
    assert (await cached.check()).ok  # reused: the file system is not touched on every request
    assert not (await WritableDir(tmp_path / "gone", cache_seconds=0).check()).ok


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to the sidecar's uid")
def test_a_read_only_state_dir_is_red_for_the_sidecar_user(tmp_path: Path) -> None:
    # Root ignores permissions: the probe runs in a process that drops to uid 10001 (production's user)
    # after its imports (the interpreter's own files may not be readable by that uid).
    base = Path(tempfile.mkdtemp(prefix="modelfleet-uid-"))  # pytest's tmp_path is private to root
    base.chmod(0o755)
    writable, read_only = base / "writable", base / "read-only"
    for directory in (writable, read_only):
        directory.mkdir()
        os.chown(directory, SIDECAR_UID, SIDECAR_UID)
    read_only.chmod(0o555)
    script = textwrap.dedent(
        """
        import asyncio, concurrent.futures.thread, json, os, sys
        from pathlib import Path
        from services.common.health import WritableDir
        os.setgid(10001)
        os.setuid(10001)
        results = [asyncio.run(WritableDir(Path(p), cache_seconds=0).check()) for p in sys.argv[1:]]
        print(json.dumps([[r.ok, r.detail] for r in results]))
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, str(writable), str(read_only)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(base)
    assert result.returncode == 0, result.stderr
    (ok, _), (bad, detail) = json.loads(result.stdout)
    assert ok is True and bad is False and "Permission denied" in detail
