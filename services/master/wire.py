"""A small HTTP/1.1 client for master's fan-out to sidecars (status polls, sync/gc triggers).

Why not httpx here: master calls hundreds of sidecars at once within one node timeout. On a shared
2-core box httpx costs ~5-7 ms of CPU per request (measured by bench/master_fanout), so 400 concurrent
polls cost more CPU than the whole deadline and *every* poll times out; plain asyncio streams cost
~0.25 ms. The client does exactly what the fan-out needs: one request per connection
(``Connection: close``), Content-Length or chunked bodies, a body size cap, http and https.
Deadlines are the caller's (``asyncio.wait_for``); the connection is closed on any exit.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY = 16 * 1024 * 1024
USER_AGENT = "modelfleet-master"


class WireError(Exception):
    """The sidecar could not be reached or answered something that is not HTTP/1.1."""


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class SidecarClient:
    """Issue one request per connection to a sidecar, with the fleet token as Bearer."""

    def __init__(self, *, token: str | None, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.token = token
        self.max_body = max_body
        self._ssl: ssl.SSLContext | None = None

    async def request(self, method: str, url: str) -> WireResponse:
        """``method`` ``url`` with an empty body; raises WireError (the caller sets the deadline)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError(f"unsupported URL {url!r}")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=self._ssl if secure else None, limit=MAX_HEADER_BYTES
            )
        except OSError as exc:
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rpartition("@")[2]
            lines = [
                f"{method} {target} HTTP/1.1",
                f"Host: {host}",
                f"User-Agent: {USER_AGENT}",
                "Accept: application/json",
                "Content-Length: 0",
                "Connection: close",
            ]
            if self.token:
                lines.append(f"Authorization: Bearer {self.token}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            return await self._read_response(reader, head_only=method == "HEAD")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise WireError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        finally:
            writer.close()

    async def _read_response(self, reader: asyncio.StreamReader, *, head_only: bool) -> WireResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise WireError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise WireError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        response = WireResponse(status=int(rest[:3]), headers=headers)
        if head_only or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        if "chunked" in headers.get("transfer-encoding", "").lower():
            response.body = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length < 0 or length > self.max_body:
                raise WireError(f"body of {length} bytes refused (limit {self.max_body})")
            response.body = await reader.readexactly(length)
        else:
            response.body = await reader.read(self.max_body + 1)
            if len(response.body) > self.max_body:
                raise WireError(f"body over {self.max_body} bytes refused")
        return response

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > self.max_body:
                raise WireError(f"body over {self.max_body} bytes refused")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
