"""LOCAL ONLY memory accounting: ``--local_only_memory_budget_bytes`` (not a tensorflow_model_server flag).

The stock server on a GPU fails a load that does not fit in device memory with RESOURCE_EXHAUSTED
("OOM when allocating tensor with shape[...] ... by allocator GPU_0_bfc", tensorflow/serving#2017).
Loading the new version before the old one unloads (availability preserving) needs room for both.
This module gives the stand-in server a budget so tests can provoke exactly that failure: a version
costs the bytes of its variables, a load that does not fit fails like a GPU OOM (and is retried like
any failed load), and the bytes come back when the version unloads.
"""

from __future__ import annotations

import threading
from pathlib import Path

from services.local_serving.config import rpc_error


def version_bytes(version_path: Path) -> int:
    """The bytes a version costs: the sizes of its ``variables/variables.data-*`` files."""
    total = 0
    for data_file in (version_path / "variables").glob("variables.data-*"):
        try:
            total += data_file.stat().st_size
        except OSError:  # vanished between listing and stat: the load itself will report it
            continue
    return total


class MemoryBudget:
    """Bytes held by versions loaded or loading; ``budget_bytes`` 0 means unlimited."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(budget_bytes, 0)
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], int] = {}

    def in_use(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(self._held.values())

    def reserve(self, name: str, version: int, version_path: Path) -> None:
        """Hold the version's bytes, or raise RESOURCE_EXHAUSTED (a GPU-OOM-shaped message)."""
        needed = version_bytes(version_path)
        with self._lock:
            self._held.pop((name, version), None)
            available = self.budget_bytes - sum(self._held.values())
            if self.budget_bytes and needed > available:
                raise rpc_error(
                    "RESOURCE_EXHAUSTED",
                    f"OOM when allocating tensor with shape[{needed}] and type uint8 on "
                    f"/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc: "
                    f"servable {{name: {name} version: {version}}} needs {needed} bytes, "
                    f"{max(available, 0)} of {self.budget_bytes} bytes available "
                    "(--local_only_memory_budget_bytes)",
                )
            self._held[(name, version)] = needed

    def release(self, name: str, version: int) -> None:
        """Give the version's bytes back (unloaded, or its load failed)."""
        with self._lock:
            self._held.pop((name, version), None)
