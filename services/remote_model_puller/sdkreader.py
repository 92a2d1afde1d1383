"""Range reads through google-cloud-storage (``FLEET_DOWNLOAD_ENGINE=sdk``).

For environments where the project's own media client is not wanted: the bytes come from
``Blob.download_to_file`` (the SDK's session: its credentials, TLS, proxies), and everything after them
is the engine's own — each range goes through the same page-aligned buffer into the same sink
(``pwrite``/``O_DIRECT`` into the staging file), the same CRC32C check against the listing, the same
fsync. Requests are pinned to the listed generation; retries stay with the engine (one policy for both).
The SDK streams in small chunks and copies each into the buffer, so it costs more CPU than the native
reader; ``bench/download`` measures both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.api_core import exceptions as gexc
from google.cloud import storage

from services.common import gcs
from services.common.errors import BucketError
from services.remote_model_puller.media import DownloadCancelled, GenerationChanged, Sink
from services.remote_model_puller.native import HashBuffer, thread_buffer


class _BufferedSink:
    """A file-like ``write`` target filling the thread's buffer and handing full buffers to the sink."""

    def __init__(self, buffer: HashBuffer, *, start: int, end: int, sink: Sink, stop: Callable[[], bool]) -> None:
        self.buffer, self.start, self.end, self.sink, self.stop = buffer, start, end, sink, stop
        self.offset = start  # file offset of the buffer's first byte
        self.filled = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        if self.stop():
            raise DownloadCancelled("download cancelled")
        if self.offset + self.filled + len(data) > self.end:
            raise BucketError(f"the server sent more than the {self.end - self.start} bytes asked for", retryable=False)
        view, size, taken = self.buffer.view, len(self.buffer.view), 0
        while taken < len(data):
            count = min(size - self.filled, len(data) - taken)
            view[self.filled : self.filled + count] = data[taken : taken + count]
            self.filled += count
            taken += count
            if self.filled == size:
                self._flush()
        return len(data)

    def _flush(self) -> None:
        if self.filled:
            self.sink(self.buffer, self.filled, self.offset)
            self.crc = self.buffer.extend_crc(self.crc, self.filled)
            self.offset += self.filled
            self.filled = 0

    def finish(self) -> int:
        self._flush()
        if self.offset != self.end:
            raise BucketError(f"the answer ended after {self.offset - self.start} of {self.end - self.start} bytes")
        return self.crc


class SdkRangeReader:
    """The download engine's range reader on google-cloud-storage (thread-safe: a buffer per thread)."""

    def __init__(self, *, client: storage.Client, bucket: str, timeout: float, buffer_bytes: int) -> None:
        self.bucket = client.bucket(bucket)
        self.timeout = timeout
        self.buffer_bytes = buffer_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests = 0

    def read_range(self, name: str, generation: int, start: int, end: int, sink: Sink, stop: Callable[[], bool]) -> int:
        """Same contract as :meth:`MediaReader.read_range`: bytes [start, end) into ``sink``, their CRC32C."""
        with self._lock:
            self.requests += 1
        writer = _BufferedSink(self._buffer(), start=start, end=end, sink=sink, stop=stop)
        blob = self.bucket.blob(name, generation=generation)
        what = f"read {name}"
        try:
            blob.download_to_file(
                writer,
                start=start,
                end=end - 1,
                raw_download=True,  # the stored bytes, which the listing's crc32c describes
                checksum=None,  # ranges are checked by the engine, whole objects against the listing
                timeout=self.timeout,
                retry=None,  # the engine retries (jittered backoff within a deadline)
            )
            return writer.finish()
        except gexc.NotFound as exc:
            raise GenerationChanged(f"{name} generation {generation} is gone from the bucket") from exc
        except gcs.VENDOR_ERRORS as exc:
            raise gcs.translate(exc, what) from exc
        except BucketError as exc:
            raise BucketError(f"{what}: {exc.detail}", retryable=exc.retryable) from exc

    def _buffer(self) -> HashBuffer:
        return thread_buffer(self._local, self.buffer_bytes)
