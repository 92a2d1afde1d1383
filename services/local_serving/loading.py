"""One version's load with retries, like LoaderHarness::Load + util/retrier.cc.

Every failed attempt is retried (upstream's default should_retry accepts any error) up to
``max_num_load_retries`` times, ``load_retry_interval_seconds`` apart, unless the retry is cancelled
(the version is no longer aspired, or the server stops). RESOURCE_EXHAUSTED from the LOCAL ONLY
memory budget is a failed attempt like any other, as a GPU OOM inside the load is upstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from services.common.errors import TFServingError
from services.local_serving.config import rpc_error
from services.local_serving.resources import MemoryBudget
from services.local_serving.servable import Servable

logger = logging.getLogger(__name__)

LoadFunction = Callable[[str, int, Path], Servable]
#: (model, version, seconds to wait) -> retry?  False when cancelled (checked first), else waits.
RetryGate = Callable[[str, int, float], bool]


class LoadAttempts:
    """Runs a load function with the memory budget, the load delay and the retry policy."""

    def __init__(
        self,
        *,
        load: LoadFunction,
        max_num_load_retries: int,
        load_retry_interval_seconds: float,
        on_load_attempt: Callable[[str, bool], None] | None,
        memory_budget_bytes: int,
        load_delay_seconds: float,
        keep_retrying: RetryGate,
    ) -> None:
        self._load = load
        self._max_retries = max(max_num_load_retries, 0)
        self._retry_interval = max(load_retry_interval_seconds, 0.0)
        self._on_load_attempt = on_load_attempt
        self._delay = max(load_delay_seconds, 0.0)
        self._keep_retrying = keep_retrying
        self.memory = MemoryBudget(memory_budget_bytes)

    def run(self, name: str, version: int, path: Path) -> tuple[Servable | None, TFServingError | None]:
        """Load until success or the retries run out: (servable, None) or (None, last error)."""
        attempt = 0
        description = f"Loading servable: {{name: {name} version: {version}}}"
        while True:
            if attempt:
                logger.info("Retrying of %s retry: %s", description, attempt, extra={"model": name, "version": version})
            servable, error = self._attempt(name, version, path)
            if self._on_load_attempt is not None:
                self._on_load_attempt(name, servable is not None)
            if servable is not None:
                logger.info(
                    "Successfully loaded servable version {name: %s version: %s}",
                    name,
                    version,
                    extra={"model": name, "version": version},
                )
                return servable, None
            assert error is not None
            logger.error(
                "%s failed: %s: %s", description, error.code, error.detail, extra={"model": name, "version": version}
            )
            if attempt >= self._max_retries:
                logger.info("Retrying of %s exhausted max_num_retries: %s", description, self._max_retries)
                break
            if not self._keep_retrying(name, version, self._retry_interval):
                logger.info("Retrying of %s was cancelled.", description)
                break
            attempt += 1
        return None, error

    def _attempt(self, name: str, version: int, path: Path) -> tuple[Servable | None, TFServingError | None]:
        try:
            self.memory.reserve(name, version, path)
            if self._delay:
                time.sleep(self._delay)  # LOCAL ONLY: holds the version LOADING, its bytes counted
            return self._load(name, version, path), None
        except TFServingError as exc:
            error = exc
        except Exception as exc:  # anything TensorFlow throws is a failed load, never a crash
            error = rpc_error("UNKNOWN", f"{type(exc).__name__}: {exc}")
        self.memory.release(name, version)
        return None, error
