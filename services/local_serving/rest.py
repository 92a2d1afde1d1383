"""Optional REST port: model status (GET /v1/models/M[/versions/N|/labels/L]), predict
(POST .../M[/versions/N|/labels/L]:predict) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.common.errors import TFServingError
from services.local_serving.core import ServerCore
from services.local_serving.manager import ModelManager
from services.local_serving.metrics import Metrics
from services.local_serving.rest_predict import predict_json
from services.local_serving.server import resolve_servable

logger = logging.getLogger(__name__)

_STATUS_PATH = re.compile(r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?")
_PREDICT_PATH = re.compile(_STATUS_PATH.pattern + r":predict")
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
    if version is not None:
        # As GetModelStatus: a version of an unknown model is "Could not find version N of model M".
        try:
            known = manager.statuses(model)
        except TFServingError:
            known = []
        statuses = [s for s in known if s.version == version]
        if not statuses:
            raise TFServingError(f"Could not find version {version} of model {model}", code="NOT_FOUND")
    else:
        statuses = manager.statuses(model)
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

    def __init__(self, core: ServerCore, metrics: Metrics, *, port: int, metrics_path: str | None) -> None:
        handler = _make_handler(core, metrics, metrics_path)
        self._httpd = ThreadingHTTPServer(("0.0.0.0", port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()


def _predict_spec(match: re.Match[str]) -> Any:
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=match["model"])
    if match["version"] is not None:
        spec.version.value = int(match["version"])
    elif match["label"] is not None:
        spec.version_label = match["label"]
    return spec


class _Handler(BaseHTTPRequestHandler):
    """Routes; ``core``, ``metrics`` and ``metrics_path`` are set on a per-server subclass."""

    protocol_version = "HTTP/1.1"
    core: ServerCore
    metrics: Metrics
    metrics_path: str | None

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
        if self.metrics_path is not None and path == self.metrics_path:
            # http_server.cc ProcessPrometheusRequest: not counted, plain text.
            self._send(200, self.metrics.render().encode(), "text/plain")
            return
        self._dispatch("GET", path, b"")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._dispatch("POST", self.path.split("?", 1)[0], raw)

    def _dispatch(self, method: str, path: str, raw: bytes) -> None:
        """http_server.cc RestApiRequestDispatcher::ProcessRequest: every /v1/ request is counted in
        request_count{model_name, status}; a successful one adds request_latency{model_name, API, "REST"}
        where API is the method of the path ("predict", or "" for a status GET)."""
        started = time.monotonic()
        model, api = "", ""
        try:
            match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH).fullmatch(path)
            if match is None:
                raise TFServingError(f"Malformed request: {method} {path}", code="INVALID_ARGUMENT")
            model = match["model"]
            if method == "POST":
                api = "predict"
                payload = self._predict(match, raw)
            else:
                version = int(match["version"]) if match["version"] is not None else None
                payload = model_status_json(self.core.manager, model, version)
        except TFServingError as exc:
            self.metrics.count_request(model, exc.code)
            self._json(http_status_for(exc.code), {"error": exc.detail})
            return
        micros = (time.monotonic() - started) * 1e6
        self.metrics.record_request_latency(model, api=api, entrypoint="REST", micros=micros)
        self.metrics.count_request(model, "OK")
        self._json(200, payload)

    def _predict(self, match: re.Match[str], raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            raise TFServingError(f"JSON Parse error: {exc}", code="INVALID_ARGUMENT") from exc
        return predict_json(resolve_servable(self.core, _predict_spec(match)), body)


def _make_handler(core: ServerCore, metrics: Metrics, metrics_path: str | None) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"core": core, "metrics": metrics, "metrics_path": metrics_path})
