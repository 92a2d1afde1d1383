"""Many simulated sidecars in one asyncio process: one port per node, a tiny HTTP/1.1 responder each.

Every node serves both roles under a path prefix (``http://127.0.0.1:<port>/puller`` and
``.../config_manager``): ``GET <role>/v1/status`` answers a SidecarStatus, ``POST <role>/v1/sync`` and
``/v1/gc`` answer 202. "Hung" nodes accept connections and read requests but never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

MODELS = ("ranker", "embedder", "reranker")


def status_body(hostname: str, role: str) -> bytes:
    """A realistic SidecarStatus payload (three models, two versions each)."""
    models = {}
    for name in MODELS:
        entry: dict[str, object] = {"serve": [2], "keep": [1, 2], "labels": {"stable": 2}}
        if role == "puller":
            entry |= {"remote_complete": [1, 2], "on_disk": [1, 2]}
        else:
            entry |= {
                "in_config": [2],
                "config_labels": {"stable": 2},
                "available": [2],
                "live": [{"version": 2, "state": "AVAILABLE"}, {"version": 1, "state": "END"}],
            }
        models[name] = entry
    return json.dumps(
        {"schema_version": 1, "hostname": hostname, "role": role, "ready": True, "models": models}
    ).encode()


def response(status: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@dataclass
class SimNode:
    hostname: str
    hung: bool
    port: int = 0
    server: asyncio.Server | None = None
    requests: int = 0
    bodies: dict[str, bytes] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                lines = head.decode("latin-1").split("\r\n")
                request_line = lines[0].split(" ")
                if len(request_line) != 3:
                    break
                method, path, _ = request_line
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if self.hung:
                    continue  # read it, never answer
                role = path.strip("/").split("/", 1)[0]
                if method == "GET" and path.endswith("/v1/status") and role in self.bodies:
                    writer.write(response("200 OK", self.bodies[role]))
                elif method == "POST" and path.endswith(("/v1/sync", "/v1/gc")):
                    writer.write(response("202 Accepted", b"{}"))
                else:
                    writer.write(response("404 Not Found", b"{}"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class SimFleet:
    """``count`` nodes on ``count`` loopback ports; the last ``hung`` never answer."""

    def __init__(self, count: int, hung: int) -> None:
        self.nodes = [SimNode(hostname=f"sim-{i:03d}", hung=i >= count - hung) for i in range(count)]
        for node in self.nodes:
            node.bodies = {role: status_body(node.hostname, role) for role in ("puller", "config_manager")}

    async def start(self) -> None:
        for node in self.nodes:
            node.server = await asyncio.start_server(node.handle, "127.0.0.1", 0, backlog=64)
            node.port = node.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for node in self.nodes:
            if node.server is not None:
                node.server.close()
        for node in self.nodes:
            if node.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.server.wait_closed(), 1)

    def registrations(self) -> list[dict[str, str]]:
        return [
            {
                "hostname": n.hostname,
                "role": role,
                "base_url": f"http://127.0.0.1:{n.port}/{role}",
                "software_version": "sim",
            }
            for n in self.nodes
            for role in ("puller", "config_manager")
        ]
