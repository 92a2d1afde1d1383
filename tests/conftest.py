"""Project-wide fixtures: one fake-gcs-server per test session, a fresh bucket per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from google.cloud import storage

from tests.support.gcs import FakeGcs

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    server = FakeGcs()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gcs_client(fake_gcs: FakeGcs) -> storage.Client:
    return fake_gcs.client()


@pytest.fixture
def bucket(gcs_client: storage.Client) -> storage.Bucket:
    """A new, empty bucket for this test (names are unique per session)."""
    name = f"models-{os.getpid()}-{next(_bucket_ids)}"
    return gcs_client.create_bucket(name)
