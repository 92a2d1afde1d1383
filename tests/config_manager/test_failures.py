"""Bad versions, changed signatures, tfserving restarts, garbage inputs: serving goes on."""

from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from services.common.contracts import FailedDocument
from services.common.contracts.local import desired_path, failed_path
from services.common.tfs import TFServingClient, parse_config
from services.config_manager.live import GRPC_OPTIONS
from services.config_manager.status import build_status
from tests.config_manager.conftest import Node, predict_loop, target

pytestmark = pytest.mark.slow


def served(node: Node) -> list[tuple[str, tuple[int, ...], dict[str, int]]]:
    return [(e.name, e.versions, e.labels) for e in parse_config(node.config_file.read_text())]


async def answer(node: Node, model: str, **spec: object) -> int:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        result = await client.predict(model, {"x": ([1.0], (1, 1))}, timeout=5, **spec)  # type: ignore[arg-type]
    return round(result.outputs["y"][0])


async def test_corrupt_version_fails_once_old_keeps_serving_and_new_bytes_load(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 3)
    node.desire(m=target([3], labels={"stable": 3}))
    assert await reconciler.run_now(), reconciler.last_error
    reloads_before = reconciler.snapshot.reloads

    node.add_version("m", 4, corrupt=True)
    node.desire(m=target([4], labels={"stable": 4}))
    async with predict_loop(node, "m", label="stable") as stable:
        assert await reconciler.run_now(), reconciler.last_error
        assert await reconciler.run_now(), reconciler.last_error  # a second pass changes nothing
        assert await stable.reached(3), stable.versions  # the loop has been answered at least once
    assert stable.failures == [] and stable.versions == [3]
    assert served(node) == [("m", (3,), {"stable": 3})]
    failed = FailedDocument.read(failed_path(node.root))
    entry = failed.find("m", 4)
    assert entry is not None and entry.message and entry.fingerprint
    status = build_status(reconciler, hostname="n1", software_version="t").models["m"]
    assert "4" in status.failed and entry.message in status.failed["4"]
    # add 4, drop it after its failure: two reloads, then none (no retry storm)
    assert reconciler.snapshot.reloads - reloads_before == 2
    assert reconciler.metrics.failed_loads._value.get() == 1

    # The puller replaces the failed version's bytes (new generations): it loads.
    shutil.rmtree(node.root / "m" / "4")
    node.add_version("m", 4)
    assert await reconciler.run_now(), reconciler.last_error
    assert served(node) == [("m", (4,), {"stable": 4})]
    assert await answer(node, "m", label="stable") == 4
    assert FailedDocument.read(failed_path(node.root)).versions == []


async def test_changed_input_signature_is_held_until_allowed(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1], labels={"stable": 1}))
    assert await reconciler.run_now(), reconciler.last_error

    reloads_before = reconciler.snapshot.reloads
    async with predict_loop(node, "m") as latest:
        node.add_version("m", 2, changed_signature=True)
        node.desire(m=target([2], labels={"stable": 2}))
        assert await reconciler.run_now(), reconciler.last_error
        assert await latest.reached(1), latest.versions  # the loop has been answered at least once
    # The signature is read from saved_model.pb on disk: version 2 never enters the config, so it never
    # takes a single unversioned ("latest") call with the old inputs.
    assert reconciler.snapshot.reloads == reloads_before
    assert latest.calls > 0 and latest.failures == [] and latest.versions == [1]
    assert served(node) == [("m", (1,), {"stable": 1})]
    status = build_status(reconciler, hostname="n1", software_version="t")
    held = status.models["m"].held
    assert [h.version for h in held] == [2]
    assert "input signature" in held[0].reason and "features" in held[0].reason
    assert any(a.kind == "held-change" for a in status.alarms)
    assert await answer(node, "m", label="stable") == 1
    assert await answer(node, "m") == 1  # the held version does not take "latest" traffic

    node.desire(m=target([2], labels={"stable": 2}, allow_signature_change=True))
    assert await reconciler.run_now(), reconciler.last_error
    assert served(node) == [("m", (2,), {"stable": 2})]
    assert build_status(reconciler, hostname="n1", software_version="t").models["m"].held == []


async def test_tfserving_restart_and_outage(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1], labels={"stable": 1}))
    assert await reconciler.run_now()
    node.add_version("m", 2)
    node.desire(m=target([2], keep=[1, 2], labels={"stable": 2}))
    assert await reconciler.run_now()
    node.add_version("m", 3, corrupt=True)
    node.desire(m=target([3], keep=[1, 2, 3], labels={"stable": 3}))
    assert await reconciler.run_now()
    assert served(node) == [("m", (2,), {"stable": 2})]  # 3 failed: dropped, 2 keeps the label
    config_before = node.config_file.read_text()

    # Outage: nothing changes, nothing is deleted, the pass fails (the worker backs off).
    node.stop_serving()
    node.add_version("m", 4)
    node.desire(m=target([4], labels={"stable": 4}))
    assert not await reconciler.run_now()
    assert node.config_file.read_text() == config_before
    assert sorted(p.name for p in (node.root / "m").iterdir()) == ["1", "2", "3", "4"]
    status = build_status(reconciler, hostname="n1", software_version="t")
    assert not status.ready and any(a.kind == "tfserving-unreachable" for a in status.alarms)

    # tfserving comes back from models.config alone: it starts (no label or failed-version trap).
    node.desire(m=target([3], keep=[1, 2, 3], labels={"stable": 3}))
    await asyncio.to_thread(node.start_serving)
    assert await answer(node, "m", label="stable") == 2
    reloads_before = reconciler.snapshot.reloads
    assert await reconciler.run_now(), reconciler.last_error
    assert reconciler.snapshot.reloads == reloads_before + 1  # re-applied (and verified) once
    assert build_status(reconciler, hostname="n1", software_version="t").ready
    assert served(node) == [("m", (2,), {"stable": 2})]  # 3 is still failed with these bytes
    assert reconciler.snapshot.live["m"] is not None
    assert [s.state.name for s in reconciler.snapshot.live["m"] if s.version == 2] == ["AVAILABLE"]


async def test_garbage_desired_json_keeps_last_good_target(node: Node) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1]))
    assert await reconciler.run_now()
    desired_path(node.root).write_text("{ this is not json")
    assert await reconciler.run_now()
    assert served(node) == [("m", (1,), {})]
    status = build_status(reconciler, hostname="n1", software_version="t")
    assert status.last_error is not None and "desired.json" in status.last_error
    assert any(a.kind == "desired-unreadable" for a in status.alarms)
    assert await answer(node, "m") == 1


async def test_hand_edited_config_is_put_back(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    reconciler = node.reconciler()
    node.add_version("m", 1)
    node.desire(m=target([1]))
    assert await reconciler.run_now()
    written = node.config_file.read_text()
    node.config_file.write_text("model_config_list {\n}\n")
    with caplog.at_level(logging.WARNING):
        assert await reconciler.run_now()
    assert node.config_file.read_text() == written
    assert any("changed by someone else" in r.getMessage() for r in caplog.records)
