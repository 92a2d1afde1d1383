"""Fixtures for local_serving tests: real SavedModels on disk and real server subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serving import ServingProcess, UpstreamClient

# Fast knobs for tests: poll every second, no retry storms.
FAST_FLAGS = (
    "--file_system_poll_wait_seconds=1",
    "--max_num_load_retries=0",
    "--load_retry_interval_micros=100000",
)


@pytest.fixture
def client_for() -> Iterator[object]:
    """Build UpstreamClients for servers; channels are closed at teardown."""
    clients: list[UpstreamClient] = []

    def make(serving: ServingProcess) -> UpstreamClient:
        client = UpstreamClient(serving.target)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def write_config(path: Path, text: str) -> Path:
    """Write a models.config and return its path."""
    path.write_text(text, encoding="utf-8")
    return path
