"""fake-gcs-server for the benchmarks, preloaded from a directory (``-data``: ``<dir>/<bucket>/<object>``),
which is much faster than uploading gigabytes through the API."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.local_fleet.fakegcs import FakeGcs  # noqa: E402


class PreloadedEmulator(FakeGcs):
    """One fake-gcs-server holding what ``data_dir`` held at start (memory backend unless told)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        backend: str = "memory",
        timeout: float = 900.0,
        notify: tuple[str, str, str] | None = None,
    ) -> None:
        super().__init__(backend=backend, preload=data_dir, notify=notify)
        self.start(timeout=timeout)
