"""The HTTP API on a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from services.common.tfs import parse_config
from services.config_manager.app import create_app
from services.config_manager.settings import Settings
from tests.config_manager.conftest import Node, target
from tests.support.serving import free_port

TOKEN = "fleet-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TOKEN = "read-only"


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run config_manager's app under uvicorn; yield a client for it."""
    async with serve_app(create_app(settings), settings) as client:
        yield client


@contextlib.asynccontextmanager
async def serve_app(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app built by create_app under uvicorn; yield a client for it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def eventually(check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


def api_settings(tmp_path: Path, *, grpc_target: str, **overrides: object) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"read grafana:{READ_TOKEN}\n")
    values: dict[str, object] = {
        "port": free_port(),
        "hostname": "node-1",
        "local_model_directory": tmp_path / "models",
        "tensorflow_serving_config_file": tmp_path / "serving_config" / "models.config",
        "tensorflow_serving_grpc_target": grpc_target,
        "token_file": token_file,
        "admin_tokens_file": tokens_file,
        "master_url": f"http://127.0.0.1:{free_port()}",  # nobody listens: registration just retries
        "sync_interval_seconds": 300.0,
        "watch_interval_seconds": 0.2,
        "low_disk_free_bytes": 0,
        "register_interval_seconds": 1.0,
        "state_dir": tmp_path / "state",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def test_api_without_tfserving_is_alive_not_ready_and_changes_nothing(tmp_path: Path) -> None:
    settings = api_settings(tmp_path, grpc_target=f"127.0.0.1:{free_port()}")
    async with serve(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        # The volume is prepared at start: .fleet/ and a first, empty models.config.
        assert settings.tensorflow_serving_config_file.read_text() == "model_config_list {\n}\n"
        assert (tmp_path / "models" / ".fleet").is_dir()
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["content-type"].startswith("application/problem+json")
        assert (await client.post("/v1/sync")).status_code == 401
        assert (await client.post("/v1/sync", headers={"Authorization": "Bearer nope"})).status_code == 401
        reader = {"Authorization": f"Bearer {READ_TOKEN}"}
        for read in ("/v1/status", "/v1/config"):  # reads need a token too; health and metrics do not
            assert (await client.get(read)).status_code == 401
            assert (await client.get(read, headers=reader)).status_code == 200  # a read token of the tokens file
        assert (await client.post("/v1/sync", headers=reader)).status_code == 401  # writes: the fleet token only
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/v1/sync", headers=auth)).status_code == 202
        assert (await client.post("/v1/gc", headers=auth)).status_code == 202

        async def unreachable_reported() -> bool:
            body = (await client.get("/v1/status", headers=AUTH)).json()
            return any(a["kind"] == "tfserving-unreachable" for a in body["alarms"])

        await eventually(unreachable_reported)
        status = (await client.get("/v1/status", headers=AUTH)).json()
        assert status["role"] == "config_manager" and status["hostname"] == "node-1" and status["ready"] is False
        config = (await client.get("/v1/config", headers=AUTH)).json()
        assert config["text"] == "model_config_list {\n}\n" and len(config["hash"]) == 16
        metrics = (await client.get("/metrics")).text
        assert 'modelfleet_config_manager_reconciles_total{result="unreachable"}' in metrics
        assert "modelfleet_config_manager_tfserving_up 0.0" in metrics


@pytest.mark.slow
async def test_api_with_tfserving_reconciles_on_desired_change(node: Node, tmp_path: Path) -> None:
    settings = api_settings(
        tmp_path / "cm",
        grpc_target=node.target,
        local_model_directory=node.root,
        tensorflow_serving_config_file=node.config_file,
    )
    node.add_version("m", 1)
    node.desire(m=target([1]))
    async with serve(settings) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout=60)
        # The watcher sees desired.json change: no POST /v1/sync needed (the interval is 300 s).
        node.add_version("m", 2)
        node.desire(m=target([2], labels={"stable": 2}))

        async def rolled() -> bool:
            entries = parse_config(node.config_file.read_text())
            return [(e.versions, e.labels) for e in entries] == [((2,), {"stable": 2})]

        await eventually(rolled, timeout=60)
        status = (await client.get("/v1/status", headers=AUTH)).json()
        model = status["models"]["m"]
        assert model["serve"] == [2] and model["in_config"] == [2] and model["config_labels"] == {"stable": 2}
        assert 2 in model["available"]
        assert status["details"]["last_reload_seconds"] is not None
        config = (await client.get("/v1/config", headers=AUTH)).json()
        assert config["hash"] == status["details"]["config_hash"] and 'name: "m"' in config["text"]
        metrics = (await client.get("/metrics")).text
        assert 'modelfleet_config_manager_reloads_total{result="ok"}' in metrics
        assert "modelfleet_config_manager_versions_available" in metrics


async def test_health_is_red_while_a_pass_is_stuck_or_the_state_dir_unwritable_never_for_tfserving(
    tmp_path: Path,
) -> None:
    # No tfserving at all: every pass fails, and that is not ill health (a restart would not fix it).
    settings = api_settings(
        tmp_path,
        grpc_target=f"127.0.0.1:{free_port()}",
        sync_interval_seconds=0.1,
        status_timeout_seconds=0.5,
        health_min_stale_seconds=0.5,
        health_stuck_seconds=0.5,
        health_probe_cache_seconds=0,
    )
    app = create_app(settings)
    reconciler = app.state.reconciler
    gate = asyncio.Event()
    blocked = False
    run_once = reconciler.run_once

    async def maybe_stuck(targets: frozenset[str] | None = None) -> None:
        if blocked:
            await gate.wait()
        await run_once(targets)

    reconciler.run_once = maybe_stuck
    async with serve_app(app, settings) as client:
        await eventually(lambda: reconciler.failures >= 3)
        seen: list[str] = []

        async def reports_the_failures() -> bool:
            # Green all along; between passes (0.1 s apart, slower on a loaded machine) the detail names them.
            healthy = await client.get("/healthz")
            assert healthy.status_code == 200, healthy.text
            checks = healthy.json()["checks"]
            assert set(checks) == {"reconcile", "watch", "registration", "state_dir"}
            seen.append(checks["reconcile"]["detail"])
            return "failed" in seen[-1]

        await eventually(reports_the_failures, timeout=15)

        blocked = True

        async def stuck() -> bool:
            response = await client.get("/healthz")
            return response.status_code == 503 and "reconcile" in response.json()["failed"]

        await eventually(stuck, timeout=15)
        red = (await client.get("/healthz")).json()
        assert "worker stuck" in red["detail"]
        blocked = False
        gate.set()
        await eventually(lambda: _status(client, "/healthz", 200), timeout=15)

        state = settings.state_dir
        state.rmdir()
        state.write_text("a file where the state dir should be\n")
        response = await client.get("/healthz")
        assert response.status_code == 503 and response.json()["failed"] == ["state_dir"]
        assert response.headers["content-type"].startswith("application/problem+json")
        state.unlink()
        state.mkdir()
        assert (await client.get("/healthz")).status_code == 200


async def _status(client: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await client.get(path)).status_code == status
