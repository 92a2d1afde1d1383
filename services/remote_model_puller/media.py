"""Ranged, generation-pinned reads of the GCS JSON API media endpoint.

Each worker thread keeps one keep-alive HTTP/1.1 connection (TLS for real GCS, verified against the
system store or ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``, through an ``HTTPS_PROXY`` CONNECT tunnel
unless ``NO_PROXY`` matches: :mod:`services.common.network`) and one page-aligned read
buffer: bytes go from the socket into the buffer (``recv_into``, until it is full or the range ends),
from the buffer to the file (the sink: ``os.pwrite``, ``O_DIRECT`` where possible) and through CRC32C in
place (:mod:`.native`), no per-chunk allocation or copy, the GIL released in all three.

The HTTP exchange is a deliberately small one (:class:`_Connection`) rather than ``http.client``:
measured, ``http.client`` spends most of a small object's client CPU parsing headers through
``email.parser``, and on a 2-core node every cycle the puller spends is one the rest of the node lacks.
It speaks only what a media GET needs: one request, a status line, headers, a body framed by
``Content-Length``. Anything else (chunked framing, a transcoded ``Content-Encoding``, a body whose
length is not the range asked for) is refused with a clear error instead of being guessed at.

Tokens come from :class:`~services.common.credentials.TokenSource` (the credentials object the SDK client
uses too): refreshed before expiry, and once when the server answers 401.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from services.common.credentials import TokenSource
from services.common.errors import BucketError, BucketNotFound, BucketPermissionDenied, FleetError
from services.common.network import BucketNetwork
from services.remote_model_puller.native import HashBuffer, thread_buffer

logger = logging.getLogger(__name__)

Sink = Callable[[HashBuffer, int, int], None]  # (buffer, byte count, file offset of the first byte)

HEAD_LIMIT = 64 * 1024  # a response head larger than this is refused


class GenerationChanged(FleetError):
    """An object was replaced or deleted in the bucket while its version was downloading."""

    status_code = 409
    slug = "generation-changed"
    title = "Object changed during download"


class DownloadCancelled(FleetError):
    """The service is stopping, or another part of the same version failed."""


class ConnectionLost(Exception):
    """The peer closed the connection before answering (a keep-alive connection it had timed out)."""


class ProtocolError(Exception):
    """The server's answer broke HTTP framing (``retryable``: a fresh connection may do better)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    keep_alive: bool


class _Connection:
    """One HTTP/1.1 connection: send a GET, read the head, then read the body into caller buffers."""

    def __init__(self, host: str, port: int, *, timeout: float, tls: bool, network: BucketNetwork) -> None:
        self.sock: socket.socket = network.connect(host, port, tls=tls, timeout=timeout)
        self.used = False
        self._head = bytearray(HEAD_LIMIT)
        self._pending = memoryview(b"")  # body bytes that arrived with the head

    def close(self) -> None:
        self.sock.close()

    def get(self, request: bytes) -> ResponseHead:
        """Send one request and read the response head (raises ConnectionLost, OSError, ProtocolError)."""
        reused, self.used = self.used, True
        self.sock.sendall(request)
        head, view = self._head, memoryview(self._head)
        filled = 0
        while True:
            if filled == len(head):
                raise ProtocolError("response head larger than 64 KiB", retryable=False)
            got = self.sock.recv_into(view[filled:])
            if not got:
                if filled == 0 and reused:
                    raise ConnectionLost()
                raise ProtocolError("connection closed in the response head")
            filled += got
            end = head.find(b"\r\n\r\n", max(0, filled - got - 3), filled)
            if end >= 0:
                break
        self._pending = view[end + 4 : filled]
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise ProtocolError(f"not an HTTP status line: {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        return ResponseHead(status, headers, keep_alive)

    @property
    def drained(self) -> bool:
        """No bytes beyond the last body were received (otherwise the connection cannot be reused)."""
        return not self._pending

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` exactly with the next body bytes."""
        count = 0
        if self._pending:
            count = min(len(self._pending), len(view))
            view[:count] = self._pending[:count]
            self._pending = self._pending[count:]
        while count < len(view):
            got = self.sock.recv_into(view[count:])
            if not got:
                raise ProtocolError(f"connection closed after {count} of {len(view)} body bytes")
            count += got


class MediaReader:
    """Thread-safe: every thread gets its own connection and buffer."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        timeout: float,
        buffer_bytes: int,
        auth: TokenSource | None = None,
        network: BucketNetwork | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad GCS endpoint {endpoint!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.https else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.base_path = parts.path.rstrip("/")
        self.bucket = bucket
        self.timeout = timeout
        self.buffer_bytes = buffer_bytes
        self._auth = auth
        self._network = network or BucketNetwork()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests = 0

    def path_for(self, name: str, generation: int) -> str:
        return (
            f"{self.base_path}/download/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"
            f"?alt=media&generation={generation}"
        )

    def read_range(self, name: str, generation: int, start: int, end: int, sink: Sink, stop: Callable[[], bool]) -> int:
        """Stream bytes [start, end) of ``name`` at ``generation`` into ``sink(buffer, count, offset)``
        (every call but the range's last with a full buffer); returns their CRC32C.
        Raises GenerationChanged, BucketError (retryable or not), DownloadCancelled."""
        with self._lock:
            self.requests += 1
        ok = False
        try:
            connection, head = self._authorized_exchange(name, generation, start, end)
            self._check(name, generation, head, end - start)
            crc = self._stream(connection, start, end, sink, stop)
            ok = head.keep_alive and connection.drained
            return crc
        except ProtocolError as exc:
            raise BucketError(f"read {name}: {exc}", retryable=exc.retryable) from exc
        except (OSError, ConnectionLost) as exc:
            raise BucketError(f"read {name}: {type(exc).__name__} {exc}".rstrip()) from exc
        finally:
            if not ok:
                self._drop()  # the connection may hold unread bytes or be closing: never reuse it

    def _request(self, name: str, generation: int, start: int, end: int, token: str | None) -> bytes:
        lines = [f"GET {self.path_for(name, generation)} HTTP/1.1", f"Host: {self.host_header}"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"Range: bytes={start}-{end - 1}", "Accept-Encoding: identity", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _authorized_exchange(
        self, name: str, generation: int, start: int, end: int
    ) -> tuple[_Connection, ResponseHead]:
        """Send the GET with a fresh enough token; a 401 refreshes the token once and sends again."""
        token = self._auth.token() if self._auth is not None else None
        connection, head = self._exchange(self._request(name, generation, start, end, token))
        if head.status != 401 or self._auth is None or token is None:
            return connection, head
        logger.warning("media read answered 401: refreshing the token once", extra={"object": name})
        self._drop()  # the 401's body is unread
        self._auth.rejected(token)
        return self._exchange(self._request(name, generation, start, end, self._auth.token()))

    def _exchange(self, request: bytes) -> tuple[_Connection, ResponseHead]:
        """Send on this thread's connection; a kept-alive one the server has closed meanwhile is replaced
        once, at once (no backoff: nothing failed but an idle timeout)."""
        connection = self._connection()
        reused = connection.used
        try:
            return connection, connection.get(request)
        except (ConnectionLost, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            self._drop()
            connection = self._connection()
            return connection, connection.get(request)

    def _check(self, name: str, generation: int, head: ResponseHead, expected: int) -> None:
        status = head.status
        if status in (404, 412):
            raise GenerationChanged(f"{name} generation {generation} is gone from the bucket")
        if status in (401, 403):
            raise BucketPermissionDenied(f"read {name}: HTTP {status}", retryable=False)
        if status == 429 or status >= 500:
            raise BucketError(f"read {name}: HTTP {status}")
        if status not in (200, 206):
            raise BucketNotFound(f"read {name}: HTTP {status}", retryable=False)
        answered = head.headers.get("x-goog-generation")
        if answered is not None and int(answered) != generation:
            raise GenerationChanged(f"{name} answered generation {answered}, expected {generation}")
        headers = head.headers
        stored = headers.get("x-goog-stored-content-encoding", "identity").lower()
        encoding = headers.get("content-encoding", "identity").lower()
        if stored != "identity" or encoding != "identity":
            raise BucketError(
                f"read {name}: object is stored with Content-Encoding {stored!r} and served as {encoding!r}; "
                "upload model files without gzip encoding (no gsutil -z/-Z, no --gzip-*)",
                retryable=False,
            )
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            raise BucketError(f"read {name}: response without Content-Length", retryable=False)
        if int(headers["content-length"]) != expected:
            raise BucketError(
                f"read {name}: HTTP {status} with {headers['content-length']} bytes for a range of {expected}",
                retryable=False,
            )

    def _stream(self, connection: _Connection, start: int, end: int, sink: Sink, stop: Callable[[], bool]) -> int:
        buffer = self._buffer()
        view = buffer.view
        crc = 0
        offset = start
        while offset < end:
            if stop():
                raise DownloadCancelled("download cancelled")
            count = min(len(view), end - offset)
            try:
                connection.read_into(view[:count])
            except ProtocolError as exc:
                raise ProtocolError(f"{exc} ({offset - start} of {end - start} bytes done)") from exc
            sink(buffer, count, offset)
            crc = buffer.extend_crc(crc, count)
            offset += count
        return crc

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = _Connection(self.host, self.port, timeout=self.timeout, tls=self.https, network=self._network)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _buffer(self) -> HashBuffer:
        return thread_buffer(self._local, self.buffer_bytes)
