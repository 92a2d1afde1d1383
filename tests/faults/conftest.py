"""Fixtures of the fault-injection tests: a fresh local fleet per test (faults leave scars), shared models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.local_fleet.convergence import wait_available
from services.local_fleet.fleet import FleetOptions, Node
from tests.support.faults import FaultFleet
from tests.support.savedmodels import write_model

MODEL = "ranker"
SYNC_INTERVAL = 2.0
POLL_INTERVAL = 2.0


def fleet_options(nodes: int = 2) -> FleetOptions:
    return FleetOptions(nodes=nodes, sync_interval=SYNC_INTERVAL, quiet_period=1.0, master_poll_interval=POLL_INTERVAL)


@pytest.fixture(scope="session")
def model_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Small real SavedModels: version v answers y = v * x."""
    root = tmp_path_factory.mktemp("fault-models")
    return {v: write_model(root, v) for v in (1, 2, 3)}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FaultFleet]:
    """Two nodes + master + fake GCS (filesystem backend), sidecars reachable by master."""
    fleet = FaultFleet(tmp_path / "fleet", fleet_options())
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def converge(nodes: list[Node], versions: list[int], *, timeout: float = 90.0) -> dict[str, list[int]]:
    """Wait until every node has exactly ``versions`` of MODEL AVAILABLE."""
    return asyncio.run(wait_available(nodes, MODEL, versions, timeout=timeout))


def targets(nodes: list[Node]) -> dict[str, str]:
    return {n.hostname: n.grpc_target for n in nodes}
