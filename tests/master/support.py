"""Real HTTP servers for master's tests: uvicorn in a background thread, stand-in sidecars, bucket data."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from google.cloud import storage

from services.common.contracts import ModelNodeStatus, SidecarStatus
from tests.support.gcs import free_port

FLEET_TOKEN = "fleet-secret"
ADMIN_TOKENS = {"alice": "admin-alice", "bob": "admin-bob"}
READ_TOKEN = "read-grafana"


class ServerThread:
    """One ASGI app served by uvicorn on a free loopback port, in its own thread and event loop."""

    def __init__(self, app: Any, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.app = app
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerThread:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=1,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=15)
            self.server = None


@dataclass
class StandInSidecar:
    """A sidecar stand-in: serves SidecarStatus at GET /v1/status and accepts POST /v1/sync and /v1/gc.

    ``mode``: "ok" answers, "error" answers 500, "hang" accepts and never answers (until stopped).
    """

    hostname: str
    role: str
    models: dict[str, ModelNodeStatus] = field(default_factory=dict)
    mode: str = "ok"
    calls: list[str] = field(default_factory=list)
    tokens_seen: list[str | None] = field(default_factory=list)
    server: ServerThread | None = None
    _release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        async def behave() -> Response | None:
            if self.mode == "error":
                return Response(status_code=500)
            if self.mode == "hang":
                # Accept and never answer, until the stand-in is stopped.
                await asyncio.to_thread(self._release.wait)
                return Response(status_code=503)
            return None

        @app.get("/v1/status")
        async def status() -> Response:
            failure = await behave()
            if failure is not None:
                return failure
            body = SidecarStatus(hostname=self.hostname, role=self.role, ready=True, models=self.models)  # type: ignore[arg-type]
            return Response(body.to_json(), media_type="application/json")

        @app.post("/v1/sync")
        async def sync() -> Response:
            failure = await behave()
            if failure is not None:
                return failure
            self.calls.append("sync")
            return Response(status_code=202)

        if self.role == "config_manager":

            @app.post("/v1/gc")
            async def gc() -> Response:
                failure = await behave()
                if failure is not None:
                    return failure
                self.calls.append("gc")
                return Response(status_code=202)

        return app

    def start(self) -> StandInSidecar:
        self._release.clear()
        self.server = ServerThread(self.app()).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def registration(self) -> dict[str, str]:
        return {"hostname": self.hostname, "role": self.role, "base_url": self.url, "software_version": "test"}


def put_version(
    bucket: storage.Bucket, model: str, version: int | str, *, prefix: str = "models/", complete: bool = True
) -> None:
    """Objects of one version as an upload leaves them (complete: saved_model.pb + whole variables)."""
    base = f"{prefix}{model}/{version}/"
    bucket.blob(base + "saved_model.pb").upload_from_string(b"pb")
    bucket.blob(base + "variables/variables.index").upload_from_string(b"idx")
    if complete:
        bucket.blob(base + "variables/variables.data-00000-of-00001").upload_from_string(b"data")


def node_model(serve: list[int], available: list[int] | None = None, **extra: Any) -> ModelNodeStatus:
    """A ModelNodeStatus with serve/keep and (for config_manager) AVAILABLE versions."""
    return ModelNodeStatus(serve=serve, keep=serve, available=available, **extra)


def fleetctl(master: Any, *args: str, token: str | None = ADMIN_TOKENS["alice"]) -> tuple[int, str]:
    """Run fleetctl in-process against ``master`` (a MasterHandle or a URL); (exit code, output)."""
    from typer.testing import CliRunner

    from services.master.fleetctl import app

    url = master if isinstance(master, str) else master.url
    env = {"FLEETCTL_MASTER": url, "COLUMNS": "250"}
    if token:
        env["FLEETCTL_TOKEN"] = token
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output
