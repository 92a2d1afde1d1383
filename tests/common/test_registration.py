"""The Registrar against a real stand-in master (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.common.http import make_async_client
from services.common.registration import Registrar
from services.common.settings import FleetSettings
from tests.remote_model_puller.servers import StandInMaster, serve_app
from tests.support.gcs import free_port


def _settings(tmp_path: Path, master_url: str, *, interval: float = 0.2) -> FleetSettings:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    return FleetSettings(
        hostname="node-1",
        port=8001,
        master_url=master_url,
        token_file=token_file,
        register_interval_seconds=interval,
        http_timeout_seconds=2,
    )


async def test_registers_and_heartbeats_with_the_fleet_token(tmp_path: Path) -> None:
    master = StandInMaster(token="s3cret")
    with serve_app(master.app()) as url:
        async with make_async_client(timeout=2) as client:
            registrar = Registrar(_settings(tmp_path, url), "puller", client)
            registrar.start()
            for _ in range(100):
                if len(master.registrations) >= 3:
                    break
                await asyncio.sleep(0.05)
            await registrar.stop()
    assert len(master.registrations) >= 3, "registration is repeated as the heartbeat"
    first = master.registrations[0]
    assert (first.hostname, first.role, first.base_url) == ("node-1", "puller", "http://node-1:8001")
    assert all(r.started_at == first.started_at for r in master.registrations)
    assert registrar.registered and registrar.consecutive_failures == 0


async def test_master_absent_backs_off_and_recovers_without_blocking(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, f"http://127.0.0.1:{port}", interval=1.0)
    async with make_async_client(timeout=2) as client:
        registrar = Registrar(settings, "config_manager", client)
        registrar.start()
        await asyncio.sleep(1.2)  # nobody listens: a refused connection, counted, not raised
        assert not registrar.registered
        assert registrar.consecutive_failures >= 1
        assert registrar.last_error is not None and "master unreachable" in registrar.last_error
        master = StandInMaster(token="s3cret")
        with serve_app(master.app(), port=port):
            registrar.trigger()
            for _ in range(100):
                if master.registrations:
                    break
                await asyncio.sleep(0.05)
            await registrar.stop(grace=2)
    assert master.registrations and master.registrations[0].role == "config_manager"
    assert registrar.registered and registrar.last_error is None


async def test_refused_registration_is_reported(tmp_path: Path) -> None:
    master = StandInMaster(token="another-token")
    with serve_app(master.app()) as url:
        async with make_async_client(timeout=2) as client:
            registrar = Registrar(_settings(tmp_path, url), "puller", client)
            ok = await registrar.run_now()
    assert not ok and not registrar.registered
    assert master.auth_headers == ["Bearer s3cret"]
    assert registrar.last_error is not None and "HTTP 403" in registrar.last_error
