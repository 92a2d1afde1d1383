"""Fixtures for local_serving tests: real SavedModels on disk and real server subprocesses."""

from __future__ import annotations

import pytest

from tests.support.serving import FAST_TEST_FLAGS


@pytest.fixture(scope="session")
def fast_flags() -> tuple[str, ...]:
    """Server flags for tests: 1 s filesystem polls, no load retries (see tests/support/serving.py)."""
    return FAST_TEST_FLAGS
