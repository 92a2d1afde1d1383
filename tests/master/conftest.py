"""Fixtures: a master (real uvicorn, real fake-gcs-server bucket) and stand-in sidecars on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import storage

from services.master.app import create_app
from services.master.settings import Settings
from tests.master.support import ADMIN_TOKENS, FLEET_TOKEN, READ_TOKEN, ServerThread, StandInSidecar
from tests.support.gcs import FakeGcs

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKENS['alice']}"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
# What the tests' default client sends: the admin token, and If-Match: * (overwrite whatever generation, on
# purpose) so a test about something else needs no GET first; tests of If-Match send their own.
ADMIN_ANY = {**ADMIN, "If-Match": "*"}
FLEET = {"Authorization": f"Bearer {FLEET_TOKEN}"}


@pytest.fixture
def token_files(tmp_path: Path) -> dict[str, Path]:
    fleet = tmp_path / "fleet.token"
    fleet.write_text(FLEET_TOKEN + "\n")
    admins = tmp_path / "admin.tokens"
    admins.write_text(
        "# [role ]name:token\n"
        + "".join(f"{n}:{t}\n" for n, t in ADMIN_TOKENS.items())
        + f"read grafana:{READ_TOKEN}\n"
    )
    return {"fleet": fleet, "admin": admins}


@pytest.fixture
def make_settings(
    tmp_path: Path, bucket: storage.Bucket, fake_gcs: FakeGcs, token_files: dict[str, Path]
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "token_file": token_files["fleet"],
            "admin_tokens_file": token_files["admin"],
            "remote_model_directory": f"gs://{bucket.name}/models",
            "storage_emulator_host": fake_gcs.url,
            "quiet_period_seconds": 0,
            "node_timeout_seconds": 1.0,
            "poll_interval_seconds": 3600,
            "bucket_deadline_seconds": 5,
            "bucket_cache_seconds": 0,
            "log_format": "text",
            # Stand-in sidecars on per-node loopback ports, and production's rule (a node's own ports).
            "sidecar_addresses": "127.0.0.1:*,{hostname}:8001,{hostname}:8002",
        }
        values.update(overrides)
        return Settings(**values)

    return build


class MasterHandle:
    def __init__(self, settings: Settings, *, run_poller: bool = False, **app_kwargs: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, run_poller=run_poller, **app_kwargs)
        self.server = ServerThread(self.app).start()
        self.url = self.server.url

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client sending the admin token and ``If-Match: *`` (``headers={}`` for none)."""
        kwargs.setdefault("headers", ADMIN_ANY)
        return httpx.Client(base_url=self.url, timeout=30, trust_env=False, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("headers", ADMIN_ANY)
        return httpx.AsyncClient(base_url=self.url, timeout=30, trust_env=False, **kwargs)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def start_master(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., MasterHandle]]:
    started: list[MasterHandle] = []

    def start(settings: Settings | None = None, **overrides: Any) -> MasterHandle:
        handle = MasterHandle(settings or make_settings(**overrides))
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sidecars() -> Iterator[Callable[..., StandInSidecar]]:
    made: list[StandInSidecar] = []

    def make(hostname: str, role: str = "puller", **kwargs: Any) -> StandInSidecar:
        sidecar = StandInSidecar(hostname=hostname, role=role, **kwargs).start()
        made.append(sidecar)
        return sidecar

    yield make
    for sidecar in made:
        sidecar.stop()


def register(client: httpx.Client, *standins: StandInSidecar) -> None:
    for sidecar in standins:
        response = client.post("/v1/nodes/register", json=sidecar.registration(), headers=FLEET)
        assert response.status_code == 200, response.text
