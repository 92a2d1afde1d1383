"""A real HTTP proxy in front of fake-gcs-server that can misbehave on media reads of chosen objects:
flip a byte (a corrupted object: crc32c mismatch), run a hook first (replace the object mid-download),
answer 429/5xx to the next reads, or 401 to requests whose bearer token a stand-in token server refuses;
or on every request: answer one status (``fail_all``: 503, 403) or swallow it (``blackhole``: the
request is read and never answered until the hole closes, then the connection drops, as a silent
network path looks to a client). When the upstream itself is down the connection drops unanswered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import urllib3


@dataclass
class Misbehaviour:
    corrupt: set[str] = field(default_factory=set)  # object names whose media reads get a flipped byte
    before_read: dict[str, Callable[[], None]] = field(default_factory=dict)  # run once, then forward
    media_reads: dict[str, int] = field(default_factory=dict)
    fail_all: int | None = None  # answer every request with this status (403: permissions revoked)
    extra_headers: dict[str, dict[str, str]] = field(default_factory=dict)  # added to media reads of an object
    fail_next: list[int] = field(default_factory=list)  # statuses answered to the next media reads, in order
    authorize: Callable[[str | None], bool] | None = None  # 401 for requests whose Authorization it refuses
    unauthorized: int = 0  # requests answered 401
    blackhole: bool = False  # hold every request unanswered while set (bounded by BLACKHOLE_MAX_SECONDS)


BLACKHOLE_MAX_SECONDS = 300.0


@contextmanager
def gcs_proxy(upstream: str, *, host: str = "127.0.0.1") -> Iterator[tuple[str, Misbehaviour]]:
    rules = Misbehaviour()
    http = urllib3.PoolManager(maxsize=16)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.path.split("?", 1)[0].endswith("/storageLayout"):
                # gcloud storage asks for the bucket layout first; fake-gcs-server does not implement it.
                bucket_name = self.path.split("/b/", 1)[1].split("/", 1)[0]
                self._reply(
                    200,
                    b'{"kind": "storage#storageLayout", "bucket": "%s", "location": "US", '
                    b'"locationType": "region"}' % bucket_name.encode(),
                )
                return
            if rules.blackhole:
                held_until = time.monotonic() + BLACKHOLE_MAX_SECONDS
                while rules.blackhole and time.monotonic() < held_until:
                    time.sleep(0.05)
                self.close_connection = True
                return
            if rules.authorize is not None and not rules.authorize(self.headers.get("Authorization")):
                with lock:
                    rules.unauthorized += 1
                self._reply(401, b'{"error": {"code": 401, "message": "invalid credentials"}}')
                return
            if rules.fail_all is not None:
                self._reply(rules.fail_all, b'{"error": {"code": %d, "message": "denied"}}' % rules.fail_all)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            name = _media_object(self.path)
            if name is not None:
                with lock:
                    rules.media_reads[name] = rules.media_reads.get(name, 0) + 1
                    hook = rules.before_read.pop(name, None)
                    failure = rules.fail_next.pop(0) if rules.fail_next else None
                if failure is not None:
                    self._reply(failure, b'{"error": {"code": %d, "message": "try later"}}' % failure)
                    return
                if hook is not None:
                    hook()
            try:
                response = http.request(
                    self.command, upstream + self.path, body=body, headers=headers, redirect=False, retries=False
                )
            except urllib3.exceptions.HTTPError:  # upstream down: the client sees the connection drop
                self.close_connection = True
                return
            data = response.data
            if name in rules.corrupt and data and response.status in (200, 206):
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            self.send_response(response.status)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            for key, value in rules.extra_headers.get(name or "", {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", rules
    finally:
        server.shutdown()
        server.server_close()


def _media_object(path: str) -> str | None:
    if "alt=media" not in path or "/o/" not in path:
        return None
    return unquote(path.split("/o/", 1)[1].split("?", 1)[0])
