"""Optional REST port: model status (GET /v1/models/M[/versions/N|/labels/L]) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.common.errors import TFServingError
from services.local_serving.manager import ModelManager
from services.local_serving.metrics import Metrics

logger = logging.getLogger(__name__)

_STATUS_PATH = re.compile(r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?")
_HTTP_CODES = {
    "OK": HTTPStatus.OK,
    "INVALID_ARGUMENT": HTTPStatus.BAD_REQUEST,
    "FAILED_PRECONDITION": HTTPStatus.BAD_REQUEST,
    "NOT_FOUND": HTTPStatus.NOT_FOUND,
    "UNAVAILABLE": HTTPStatus.SERVICE_UNAVAILABLE,
    "DEADLINE_EXCEEDED": HTTPStatus.GATEWAY_TIMEOUT,
}


def http_status_for(code: str) -> HTTPStatus:
    """TF Serving's mapping of a status code to HTTP (UNKNOWN/INTERNAL and the rest are 500)."""
    return _HTTP_CODES.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)


def model_status_json(manager: ModelManager, model: str, version: int | None) -> dict[str, Any]:
    """The REST body of GetModelStatus; the label form lists every version (the label is ignored)."""
    statuses = manager.statuses(model)
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise TFServingError(f"Could not find version {version} of model {model}", code="NOT_FOUND")
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {"error_code": s.error_code, "error_message": s.error_message},
            }
            for s in statuses
        ]
    }


class RestServer:
    """A small threaded HTTP server on its own port."""

    def __init__(self, manager: ModelManager, metrics: Metrics, *, port: int, metrics_path: str | None) -> None:
        handler = _make_handler(manager, metrics, metrics_path)
        self._httpd = ThreadingHTTPServer(("0.0.0.0", port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()


def _make_handler(manager: ModelManager, metrics: Metrics, metrics_path: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("rest: %s", format % args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload, indent=1).encode(), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if metrics_path is not None and path == metrics_path:
                self._send(200, metrics.render().encode(), "text/plain; version=0.0.4")
                return
            match = _STATUS_PATH.fullmatch(path)
            if match is None:
                self._json(400, {"error": f"Malformed request: GET {path}"})
                return
            model = match["model"]
            version = int(match["version"]) if match["version"] is not None else None
            try:
                body = model_status_json(manager, model, version)
            except TFServingError as exc:
                metrics.count_request(api="GetModelStatus", model=model, status=exc.code)
                self._json(http_status_for(exc.code), {"error": exc.detail})
                return
            metrics.count_request(api="GetModelStatus", model=model, status="OK")
            self._json(200, body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._json(400, {"error": f"Malformed request: POST {self.path} (REST predict is not implemented)"})

    return Handler
