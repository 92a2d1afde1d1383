"""Ranged, generation-pinned reads of the GCS JSON API media endpoint.

One keep-alive ``http.client`` connection and one page-aligned read buffer per worker thread: bytes go
from the socket into the buffer (``readinto``, until it is full or the range ends), from the buffer to
the file (the sink: ``os.pwrite``, ``O_DIRECT`` where possible) and through CRC32C in place
(:mod:`.native`), no per-chunk allocation or copy, the GIL released in all three.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from services.common.errors import BucketError, BucketNotFound, BucketPermissionDenied, FleetError
from services.remote_model_puller.native import HashBuffer

HeaderSource = Callable[[], dict[str, str]]
Sink = Callable[[HashBuffer, int, int], None]  # (buffer, byte count, file offset of the first byte)


class GenerationChanged(FleetError):
    """An object was replaced or deleted in the bucket while its version was downloading."""

    status_code = 409
    slug = "generation-changed"
    title = "Object changed during download"


class DownloadCancelled(FleetError):
    """The service is stopping, or another part of the same version failed."""


class MediaReader:
    """Thread-safe: every thread gets its own connection and buffer."""

    def __init__(
        self, *, endpoint: str, bucket: str, timeout: float, buffer_bytes: int, headers: HeaderSource | None = None
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad GCS endpoint {endpoint!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.bucket = bucket
        self.timeout = timeout
        self.buffer_bytes = buffer_bytes
        self._headers = headers or dict
        self._local = threading.local()
        self._ssl = ssl.create_default_context() if self.https else None
        self._lock = threading.Lock()
        self.requests = 0

    def path_for(self, name: str, generation: int) -> str:
        return (
            f"{self.base_path}/download/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"
            f"?alt=media&generation={generation}"
        )

    def read_range(self, name: str, generation: int, start: int, end: int, sink: Sink, stop: Callable[[], bool]) -> int:
        """Stream bytes [start, end) of ``name`` at ``generation`` into ``sink(buffer, count, offset)``
        (every call but the range's last with a full buffer); returns
        their CRC32C. Raises GenerationChanged, BucketError (retryable or not), DownloadCancelled."""
        with self._lock:
            self.requests += 1
        connection = self._connection()
        headers = {**self._headers(), "Range": f"bytes={start}-{end - 1}"}
        try:
            connection.request("GET", self.path_for(name, generation), headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise BucketError(f"read {name}: {type(exc).__name__}") from exc
        ok = False
        try:
            self._check(name, generation, response)
            crc = self._stream(name, response, start, end, sink, stop)
            ok = True
            return crc
        finally:
            if not ok:
                self._drop()  # the connection may hold unread bytes: never reuse it

    def _check(self, name: str, generation: int, response: http.client.HTTPResponse) -> None:
        status = response.status
        if status in (404, 412):
            raise GenerationChanged(f"{name} generation {generation} is gone from the bucket")
        if status in (401, 403):
            raise BucketPermissionDenied(f"read {name}: HTTP {status}", retryable=False)
        if status == 429 or status >= 500:
            raise BucketError(f"read {name}: HTTP {status}")
        if status not in (200, 206):
            raise BucketNotFound(f"read {name}: HTTP {status}", retryable=False)
        answered = response.getheader("x-goog-generation")
        if answered is not None and int(answered) != generation:
            raise GenerationChanged(f"{name} answered generation {answered}, expected {generation}")

    def _stream(
        self, name: str, response: http.client.HTTPResponse, start: int, end: int, sink: Sink, stop: Callable[[], bool]
    ) -> int:
        buffer = self._buffer()
        view = buffer.view
        crc = 0
        offset = start
        try:
            while offset < end:
                if stop():
                    raise DownloadCancelled("download cancelled")
                want = min(len(view), end - offset)
                count = 0
                while count < want:
                    got = response.readinto(view[count:want])
                    if not got:
                        raise BucketError(f"read {name}: short read ({offset + count - start} of {end - start} bytes)")
                    count += got
                sink(buffer, count, offset)
                crc = buffer.extend_crc(crc, count)
                offset += count
        except (OSError, http.client.HTTPException) as exc:
            raise BucketError(f"read {name}: {type(exc).__name__} after {offset - start} bytes") from exc
        return crc

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self.https:
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ssl)
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _buffer(self) -> HashBuffer:
        buffer: HashBuffer | None = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = HashBuffer(self.buffer_bytes)
            self._local.buffer = buffer
        return buffer
