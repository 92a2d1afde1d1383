"""Real HTTP servers for puller tests: any ASGI app on a free port (uvicorn in a thread), and a
stand-in master built from the registration contract that records what it receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from services.common.contracts import Registration
from tests.support.gcs import free_port


@contextmanager
def serve_app(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class StandInMaster:
    """Records registrations; ``fail_with`` makes it answer an error status instead."""

    token: str | None = None
    registrations: list[Registration] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    fail_with: int | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/nodes/register")
        async def register(request: Request) -> Response:
            header = request.headers.get("authorization")
            self.auth_headers.append(header)
            if self.fail_with is not None:
                return Response(status_code=self.fail_with)
            if self.token is not None and header != f"Bearer {self.token}":
                return Response(status_code=403)
            self.registrations.append(Registration.model_validate_json(await request.body()))
            return Response(status_code=204)

        return app
