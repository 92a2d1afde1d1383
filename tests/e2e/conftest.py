"""A local fleet shared by the end-to-end tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local_fleet.fleet import FleetOptions, LocalFleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    root = tmp_path_factory.mktemp("fleet")
    fleet = LocalFleet(root / "run", FleetOptions(nodes=3, sync_interval=2.0, quiet_period=1.0))
    try:
        fleet.start()
    except Exception:
        fleet.stop()
        raise
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")
