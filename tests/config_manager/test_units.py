"""Fast tests of the pieces around the planner: load tracking, GC decisions, the volume's files."""

from __future__ import annotations

import os
from pathlib import Path

from services.common.contracts import FailedDocument, LocalModelTarget
from services.common.contracts.local import desired_path, failed_path, fleet_dir
from services.common.tfs import ModelEntry, SignatureSpec, TensorSpec, VersionState, VersionStatus
from services.config_manager.capacity import CapacityWaits
from services.config_manager.gc import GarbageCollector, plan_gc
from services.config_manager.loads import LoadTracker
from services.config_manager.localdisk import DesiredReader, FailedStore, prepare_volume, scan_models, trash_dir
from services.config_manager.signatures import input_signature, signature_change

A, L, E = VersionState.AVAILABLE, VersionState.LOADING, VersionState.END


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def st(version: int, state: VersionState, code: int = 0, message: str = "") -> VersionStatus:
    return VersionStatus(version=version, state=state, error_code=code, error_message=message)


def tracker(clock: Clock) -> LoadTracker:
    return LoadTracker(load_timeout=60, start_grace=5, readd_delay=3, clock=clock)


def test_end_with_error_is_a_failure_with_code_name_and_message() -> None:
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (4,))])
    t.observe("m", [st(4, L)])
    failures = t.failures("m", [st(4, E, 15, "Can't parse saved_model.pb")], [4])
    assert [(f.version, f.code, f.message) for f in failures] == [(4, "DATA_LOSS", "Can't parse saved_model.pb")]


def test_stale_end_error_right_after_readd_is_not_a_failure_yet() -> None:
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (4,))])
    stale = [st(4, E, 3, "old bytes")]
    assert t.failures("m", stale, [4]) == []
    clock.now += 5
    assert [f.version for f in t.failures("m", stale, [4])] == [4]


def test_stuck_loading_fails_after_the_load_timeout() -> None:
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (2,))])
    assert t.failures("m", [st(2, L)], [2]) == []
    clock.now += 61
    (failure,) = t.failures("m", [st(2, L)], [2])
    assert failure.code == "DEADLINE_EXCEEDED" and "LOADING" in failure.message


def test_restart_is_detected_when_listed_versions_vanish() -> None:
    t = tracker(Clock())
    t.observe("m", [st(2, A), st(1, E)])
    assert t.restart_suspected("m", [st(2, A), st(1, E)]) is None
    assert t.restart_suspected("m", [st(2, A)]) is not None
    assert t.restart_suspected("m", None) is not None
    assert t.restart_suspected("never-seen", None) is None


def test_dropped_version_cools_down_before_it_may_come_back() -> None:
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (3, 4))])
    t.configured([ModelEntry("m", "/m", (3,))])
    assert t.cooling("m") == {4}
    clock.now += 3
    assert t.cooling("m") == frozenset()


def test_stale_end_error_outlives_the_grace_while_the_server_is_busy_loading_another_model() -> None:
    # TF Serving loads inline: while another model loads, a re-added version keeps its old END error.
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (4,)), ModelEntry("other", "/o", (2,))])
    stale = [st(4, E, 3, "old bytes")]
    for _ in range(4):  # 12 s of the other model loading: far beyond the 5 s grace
        clock.now += 3
        t.observe("other", [st(2, L)])
        assert t.failures("m", stale, [4]) == []
    t.observe("other", [st(2, A)])
    clock.now += 4.9
    assert t.failures("m", stale, [4]) == []
    clock.now += 0.2  # quiet for the whole grace: a failure listed now is the new load's
    assert [f.version for f in t.failures("m", stale, [4])] == [4]


def test_a_removed_version_cools_down_only_while_the_server_is_quiet() -> None:
    # A removal the busy server has not processed yet would be merged away by the re-add.
    clock = Clock()
    t = tracker(clock)
    t.configured([ModelEntry("m", "/m", (3, 4))])
    t.configured([ModelEntry("m", "/m", (3,))])
    for _ in range(3):
        clock.now += 2
        t.observe("other", [st(7, L)])
        assert t.cooling("m") == {4}
    assert t.cooling_left() == 3
    t.observe("other", [st(7, A)])
    clock.now += 3
    assert t.cooling("m") == frozenset()


def test_capacity_waits_until_a_loaded_version_leaves_or_time_is_up(tmp_path: Path) -> None:
    clock = Clock()
    waits = CapacityWaits(retry_seconds=300, clock=clock)
    version_dir = tmp_path / "m" / "2"
    (version_dir / "variables").mkdir(parents=True)
    (version_dir / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)
    (version_dir / "variables" / "variables.index").write_bytes(b"\0" * 24)
    loaded = frozenset({("m", 1), ("other", 5)})
    wait = waits.record(
        model="m", version=2, message="OOM", version_dir=version_dir, fingerprint="f2", loaded_now=loaded
    )
    assert wait.bytes_needed == 1024 and "capacity" in wait.reason
    prints = {"m": {1: "f1", 2: "f2"}}
    waits.release(loaded | {("m", 3)}, prints)  # something new loaded: no memory freed
    assert set(waits.waiting("m")) == {2}
    waits.release(frozenset({("m", 1)}), prints)  # the other model unloaded
    assert waits.waiting("m") == {}
    waits.record(model="m", version=2, message="OOM", version_dir=version_dir, fingerprint="f2", loaded_now=loaded)
    clock.now += 299
    waits.release(loaded, prints)
    assert set(waits.waiting("m")) == {2}
    clock.now += 1
    waits.release(loaded, prints)
    assert waits.waiting("m") == {}
    waits.record(model="m", version=2, message="OOM", version_dir=version_dir, fingerprint="f2", loaded_now=loaded)
    waits.release(loaded, {"m": {1: "f1", 2: "new bytes"}})
    assert waits.waiting("m") == {}


def test_gc_plan_never_takes_served_loaded_or_unsettled_versions() -> None:
    targets = {
        "m": LocalModelTarget(serve=[5], keep=[4, 5]),
        "busy": LocalModelTarget(serve=[2]),
        "gone": LocalModelTarget(enabled=False),
    }
    candidates = plan_gc(
        on_disk={
            "m": frozenset({1, 2, 3, 4, 5}),
            "busy": frozenset({1, 2}),
            "gone": frozenset({7}),
            "x": frozenset({1}),
        },
        targets=targets,
        served={"m": frozenset({5}), "busy": frozenset({1, 2})},
        live={"m": {5: A, 3: L, 2: E}, "busy": {1: A, 2: L}, "gone": {7: E}},
        settled={"m": True, "busy": False},
    )
    got = [(c.model, c.version, c.low_disk_only) for c in candidates]
    # 3 is still loaded, 5 serves, 4 is kept (low disk only); busy is mid-roll; x is not in desired.json.
    assert got == [("gone", 7, False), ("m", 1, False), ("m", 2, False), ("m", 4, True)]
    assert plan_gc(on_disk={"m": frozenset({1})}, targets=None, served={}, live={}, settled={}) == []


def test_gc_removes_via_trash_and_low_disk_stops_once_space_is_back(tmp_path: Path) -> None:
    root = tmp_path / "models"
    for version in (1, 2, 3):
        (root / "m" / str(version)).mkdir(parents=True)
        (root / "m" / str(version) / "saved_model.pb").write_bytes(b"x")
    free = {"bytes": 10}
    collector = GarbageCollector(root, low_disk_free_bytes=100, free_bytes=lambda _p: free["bytes"])
    candidates = plan_gc(
        on_disk=scan_models(root),
        targets={"m": LocalModelTarget(serve=[3], keep=[1, 2, 3])},
        served={"m": frozenset({3})},
        live={"m": {3: A}},
        settled={"m": True},
    )
    assert [c.version for c in candidates] == [1, 2]

    def free_after_one_removal(_p: Path) -> int:
        return 10 if (root / "m" / "1").exists() else 1000

    collector.free_bytes = free_after_one_removal
    report = collector.run(candidates)
    assert [c.version for c in report.removed] == [1]  # space is back: 2 stays kept
    assert scan_models(root) == {"m": frozenset({2, 3})}
    assert not report.low_disk and list(trash_dir(root).iterdir()) == []


def test_prepare_volume_creates_fleet_dir_and_first_config(tmp_path: Path) -> None:
    config = tmp_path / "serving_config" / "models.config"
    prepare_volume(tmp_path / "models", config)
    assert config.read_text() == "model_config_list {\n}\n"
    assert fleet_dir(tmp_path / "models").is_dir()
    assert oct(config.stat().st_mode & 0o777) == "0o664"
    config.write_text('model_config_list { config { name: "keep" base_path: "/x" model_platform: "tensorflow" } }')
    prepare_volume(tmp_path / "models", config)
    assert "keep" in config.read_text()  # an existing config is never replaced at start


def test_scan_models_counts_only_installed_canonical_versions(tmp_path: Path) -> None:
    for name in ("1", "007", "3.tmp", ".staging-4", "5"):
        (tmp_path / "m" / name).mkdir(parents=True)
        (tmp_path / "m" / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "m" / "6").mkdir()  # no saved_model: not installed
    (tmp_path / ".fleet").mkdir()
    assert scan_models(tmp_path) == {"m": frozenset({1, 5})}


def test_desired_reader_keeps_last_good_document_on_garbage(tmp_path: Path) -> None:
    reader = DesiredReader(tmp_path)
    assert reader.read().document is None and "not found" in (reader.read().error or "")
    desired_path(tmp_path).parent.mkdir(parents=True)
    desired_path(tmp_path).write_text('{"models": {"m": {"serve": [2]}}}')
    assert reader.read().document is not None and reader.read().error is None
    desired_path(tmp_path).write_text('{"models": {"m": {"serve": "two"}}}')
    os.utime(desired_path(tmp_path), ns=(1, 1))
    reading = reader.read()
    assert reading.document is not None and reading.document.models["m"].serve == [2]
    assert reading.error is not None and "last good target kept" in reading.error


def test_failed_store_matches_fingerprints_and_forgets_replaced_bytes(tmp_path: Path) -> None:
    store = FailedStore(tmp_path)
    store.record(model="m", version=4, code="DATA_LOSS", message="bad pb", fingerprint="aaa")
    assert store.failed_versions("m", {4: "aaa"}) == {4: "DATA_LOSS: bad pb"}
    assert store.failed_versions("m", {4: "bbb"}) == {}
    reread = FailedStore(tmp_path)
    reread.load()
    assert reread.document.find("m", 4) is not None
    reread.prune({"m": frozenset({4})}, {"m": {4: "bbb"}})
    assert FailedDocument.read(failed_path(tmp_path)).versions == []


def test_signature_change_names_what_changed() -> None:
    old = input_signature(
        {"serving_default": SignatureSpec("predict", {"x": TensorSpec("x", "DT_FLOAT", (-1, 1))}, {})}
    )
    same = input_signature(
        {"serving_default": SignatureSpec("predict", {"x": TensorSpec("x", "DT_FLOAT", (-1, 1))}, {})}
    )
    wider = input_signature(
        {"serving_default": SignatureSpec("predict", {"x": TensorSpec("x", "DT_FLOAT", (-1, 2))}, {})}
    )
    assert signature_change(old, same) is None
    change = signature_change(old, wider)
    assert change is not None and "x:DT_FLOAT[-1,1] -> x:DT_FLOAT[-1,2]" in change
    missing = input_signature({})
    assert signature_change(old, missing) is not None
