"""Prometheus metrics in TF Serving's naming (':tensorflow:serving:request_count'), text exposition.

Written by hand because prometheus-client appends ``_total`` to counters, which TF Serving does not.
"""

from __future__ import annotations

import threading
from collections import Counter


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters for requests and load attempts; low-cardinality labels only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()
        self._loads: Counter[tuple[str, str]] = Counter()

    def count_request(self, *, api: str, model: str, status: str) -> None:
        """One gRPC/REST call to ``api`` for ``model`` ended with ``status`` (a code name)."""
        with self._lock:
            self._requests[(api, model, status)] += 1

    def count_load_attempt(self, model: str, ok: bool) -> None:
        """One SavedModel load attempt."""
        with self._lock:
            self._loads[(model, "success" if ok else "failure")] += 1

    def render(self) -> str:
        """The Prometheus text exposition of every counter."""
        with self._lock:
            requests = sorted(self._requests.items())
            loads = sorted(self._loads.items())
        lines = [
            "# TYPE :tensorflow:serving:request_count counter",
            *(
                f':tensorflow:serving:request_count{{api="{_escape(api)}",model_name="{_escape(model)}",'
                f'status="{_escape(status)}"}} {count}'
                for (api, model, status), count in requests
            ),
            "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter",
            *(
                f':tensorflow:cc:saved_model:load_attempt_count{{model_name="{_escape(model)}",'
                f'status="{status}"}} {count}'
                for (model, status), count in loads
            ),
        ]
        return "\n".join(lines) + "\n"
