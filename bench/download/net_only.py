"""The network limit of this set-up: the puller's own reader, no disk at all.

    python bench/download/net_only.py EMULATOR_URL BUCKET PREFIX

Reads every object under PREFIX with the puller's defaults (8 threads, 32 MiB ranges, 1 MiB buffer,
crc32c computed as the bytes arrive) and throws the bytes away. With the emulator on the same two cores,
this is the fastest any download into this disk can be; comparing the puller with it separates the
disk path from the network path. Prints one JSON line: seconds (interpreter start excluded) and bytes.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import storage  # noqa: E402

from services.remote_model_puller.download import EngineOptions  # noqa: E402
from services.remote_model_puller.media import MediaReader  # noqa: E402


def main() -> None:
    url, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    options = EngineOptions()
    client = storage.Client(project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    started = time.perf_counter()
    blobs = list(client.list_blobs(bucket, prefix=prefix))
    reader = MediaReader(endpoint=url, bucket=bucket, timeout=30, buffer_bytes=options.buffer_bytes)
    tasks = [
        (blob.name, blob.generation, start, min(start + options.range_bytes, blob.size))
        for blob in blobs
        for start in range(0, blob.size, options.range_bytes)
    ]
    tasks.sort(key=lambda t: t[3] - t[2], reverse=True)

    def read(task: tuple[str, int, int, int]) -> int:
        name, generation, start, end = task
        reader.read_range(name, generation, start, end, lambda buffer, count, offset: None, lambda: False)
        return end - start

    with ThreadPoolExecutor(options.workers) as pool:
        total = sum(pool.map(read, tasks))
    print(json.dumps({"ok": True, "seconds": time.perf_counter() - started, "bytes": total}))


if __name__ == "__main__":
    main()
