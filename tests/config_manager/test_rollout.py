"""Rolls against a real local_serving with real SavedModels: serving never blinks."""

from __future__ import annotations

import pytest

from services.common.tfs import parse_config
from tests.config_manager.conftest import Node, predict_loop, target

pytestmark = pytest.mark.slow


async def test_roll_1_2_3_with_predict_loop_has_zero_failures(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1], labels={"stable": 1}))
    assert await reconciler.run_now()
    entries = parse_config(node.config_file.read_text())
    assert [(e.name, e.versions, e.labels) for e in entries] == [("m", (1,), {"stable": 1})]

    async with predict_loop(node, "m") as latest, predict_loop(node, "m", label="stable") as stable:
        for version in (2, 3):
            node.add_version("m", version)
            node.desire(m=target([version], labels={"stable": version}))
            assert await reconciler.run_now(), reconciler.last_error
            entries = parse_config(node.config_file.read_text())
            assert [(e.versions, e.labels) for e in entries] == [((version,), {"stable": version})]
            assert await latest.reached(version), latest.versions
            assert await stable.reached(version), stable.versions

    assert latest.calls > 20 and stable.calls > 20
    assert latest.failures == [] and stable.failures == []
    assert latest.versions == [1, 2, 3]
    assert stable.versions == [1, 2, 3]
    # Two reloads per step of the story: add a version, then (once AVAILABLE) drop the old one and
    # move the label; the first deployment also needs two (load, then label). No storm.
    assert reconciler.snapshot.reloads == 2 + 2 * 2
