"""Settings from runbook names, logging formats, problem+json, token checks, healthcheck command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from services.common.errors import NotFound, Unavailable
from services.common.http import require_token
from services.common.logging import JsonFormatter, TextFormatter
from services.common.problems import install_problem_handlers
from services.common.settings import BucketSettings, NodeSettings


def test_settings_read_runbook_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOSTNAME", "gpu-node-7")
    monkeypatch.setenv("LOCAL_MODEL_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("FLEET_PORT", "8001")
    monkeypatch.setenv("FLEET_MASTER_URL", "http://master:80/")
    monkeypatch.setenv("REMOTE_MODEL_DIRECTORY", "gs://ml-models/prod/models/")
    node = NodeSettings()
    assert (node.hostname, node.local_model_directory, node.port) == ("gpu-node-7", tmp_path, 8001)
    assert node.master_url == "http://master:80" and node.base_url() == "http://gpu-node-7:8001"
    bucket = BucketSettings()
    assert (bucket.bucket_name, bucket.prefix) == ("ml-models", "prod/models/")


def test_bad_bucket_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_MODEL_DIRECTORY", "s3://nope")
    with pytest.raises(ValueError, match="gs://bucket"):
        BucketSettings()


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord("services.x", logging.INFO, __file__, 1, "loaded %s", ("ranker",), None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_and_text_logs_carry_structured_fields() -> None:
    line = json.loads(JsonFormatter().format(_record(model="ranker", version=3)))
    assert line["msg"] == "loaded ranker" and line["model"] == "ranker" and line["version"] == 3
    assert "model=ranker version=3" in TextFormatter().format(_record(model="ranker", version=3))


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("no node named x")

    @app.get("/busy")
    async def busy() -> None:
        raise Unavailable("node-2 unhealthy", retry_after=3)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.post("/guarded", dependencies=[Depends(require_token("s3cret"))])
    async def guarded() -> dict[str, bool]:
        return {"ok": True}

    return app


async def test_problem_json_and_tokens() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/missing")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "no node named x"
        r = await client.get("/busy")
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        r = await client.get("/boom")
        assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
        assert (await client.post("/guarded")).status_code == 401
        assert (await client.post("/guarded", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await client.post("/guarded", headers={"Authorization": "Bearer s3cret"})).status_code == 200


def test_healthcheck_command_exit_codes() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.send_header("Content-Type", "application/problem+json")
            self.end_headers()
            if self.path != "/healthz":
                self.wfile.write(b'{"status": 503, "detail": "sync: worker stuck: pass running for 700 s"}')

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    run = lambda url: subprocess.run([sys.executable, "-m", "services.common.healthcheck", url], capture_output=True)  # noqa: E731
    try:
        assert run(base + "/healthz").returncode == 0
        failed = run(base + "/readyz")
        # The reason reaches `docker inspect` (State.Health.Log): the failed check, not just "1".
        assert failed.returncode == 1 and b"sync: worker stuck" in failed.stderr
    finally:
        server.shutdown()
    assert run(base + "/healthz").returncode == 1
