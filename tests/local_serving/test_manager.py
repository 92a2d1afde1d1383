"""The version state machine and discovery, in process, with a controllable load function.

The load function is our own seam (``ModelManager(load=...)``), not a vendor SDK: it returns a real
:class:`Servable` without TensorFlow so these tests stay fast. Directories are real.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import TFServingError
from services.common.tfs import VersionState as State
from services.local_serving import discovery
from services.local_serving.config import ModelSource, VersionPolicy
from services.local_serving.discovery import BasePathMissing, aspired_versions, parse_version
from services.local_serving.manager import ModelManager
from services.local_serving.servable import Servable


class Loader:
    """Loads succeed unless told otherwise; can block a version until released."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.fail_times: dict[tuple[str, int], int] = {}
        self.gates: dict[tuple[str, int], threading.Event] = {}

    def __call__(self, name: str, version: int, path: Path) -> Servable:
        self.attempts.append((name, version))
        gate = self.gates.get((name, version))
        if gate is not None:
            gate.wait(10)
        if self.fail_times.get((name, version), 0) > 0:
            self.fail_times[(name, version)] -= 1
            raise TFServingError(f"cannot load {path}", code="DATA_LOSS")
        return Servable(name=name, version=version, path=path, signatures={}, signature_defs={})


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def wait_for_polls(manager: ModelManager, count: int) -> None:
    polls = manager.polls
    wait_until(lambda: manager.polls >= polls + count)


def states(manager: ModelManager, name: str) -> list[tuple[int, State]]:
    return [(s.version, s.state) for s in manager.statuses(name)]


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
def make_manager(loader: Loader) -> Iterator[Callable[..., ModelManager]]:
    managers: list[ModelManager] = []

    def make(*, retries: int = 0, poll: float = 0.2, **options: Any) -> ModelManager:
        manager = ModelManager(
            load=loader,
            poll_wait_seconds=poll,
            max_num_load_retries=retries,
            load_retry_interval_seconds=0.05,
            **options,
        )
        manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.stop()


def source(base: Path, policy: VersionPolicy | None = None, name: str = "m") -> ModelSource:
    return ModelSource(name, str(base), policy or VersionPolicy("latest"))


def test_version_names_follow_simple_atoi() -> None:
    assert parse_version("7") == 7
    assert parse_version("00000123") == 123
    for not_a_version in ("1.tmp", ".tmp", "v2", "", "1e3", str(2**63)):
        assert parse_version(not_a_version) is None


def test_policies_pick_versions_from_disk(tmp_path: Path) -> None:
    for child in ("1", "002", "3", "10.tmp", "v4"):
        (tmp_path / child).mkdir()
    (tmp_path / "5").write_text("files count too")
    assert sorted(aspired_versions(source(tmp_path))) == [5]
    assert sorted(aspired_versions(source(tmp_path, VersionPolicy("latest", num_versions=2)))) == [3, 5]
    assert sorted(aspired_versions(source(tmp_path, VersionPolicy("all")))) == [1, 2, 3, 5]
    specific = VersionPolicy("specific", versions=frozenset({2, 9}))
    assert aspired_versions(source(tmp_path, specific)) == {2: tmp_path / "002"}
    (tmp_path / "01").mkdir()  # a second spelling of version 1: one is kept
    assert sorted(aspired_versions(source(tmp_path, VersionPolicy("all")))) == [1, 2, 3, 5]
    with pytest.raises(BasePathMissing):
        aspired_versions(source(tmp_path / "absent"))


def test_new_version_is_available_before_the_old_one_unloads(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    (tmp_path / "1").mkdir()
    manager = make_manager()
    seq = manager.set_sources({"m": source(tmp_path)})
    assert manager.wait_until_available_or_end(["m"], seq)["m"].state == State.AVAILABLE
    gate = loader.gates[("m", 2)] = threading.Event()
    (tmp_path / "2").mkdir()
    wait_until(lambda: states(manager, "m")[0] == (2, State.LOADING))
    assert manager.servable("m", None).version == 1  # the old version serves while the new loads
    gate.set()
    wait_until(lambda: states(manager, "m") == [(2, State.AVAILABLE), (1, State.END)])
    assert manager.servable("m", None).version == 2


def test_failed_load_is_retried_then_ends_and_is_not_retried_while_on_disk(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    (tmp_path / "1").mkdir()
    manager = make_manager(retries=2)
    manager.wait_until_available_or_end(["m"], manager.set_sources({"m": source(tmp_path)}))
    loader.fail_times[("m", 2)] = 3  # 1 try + 2 retries, all failing
    (tmp_path / "2").mkdir()
    wait_until(lambda: states(manager, "m")[0] == (2, State.END))
    top = manager.statuses("m")[0]
    assert (top.error_code, top.error_message) == ("DATA_LOSS", f"cannot load {tmp_path / '2'}")
    assert loader.attempts.count(("m", 2)) == 3
    assert manager.servable("m", None).version == 1  # the last good version keeps serving
    time.sleep(0.6)  # several polls
    assert loader.attempts.count(("m", 2)) == 3
    (tmp_path / "2").rename(tmp_path / "away")
    polls = manager.polls
    wait_until(lambda: manager.polls >= polls + 2)  # a complete poll saw the version gone
    (tmp_path / "away").rename(tmp_path / "2")  # removed and re-added: loaded again (now it works)
    wait_until(lambda: states(manager, "m") == [(2, State.AVAILABLE), (1, State.END)])
    assert loader.attempts.count(("m", 2)) == 4


def test_retry_succeeds_within_the_budget(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    (tmp_path / "1").mkdir()
    loader.fail_times[("m", 1)] = 1
    manager = make_manager(retries=1)
    assert (
        manager.wait_until_available_or_end(["m"], manager.set_sources({"m": source(tmp_path)}))["m"].state
        == State.AVAILABLE
    )
    assert loader.attempts == [("m", 1), ("m", 1)]


def test_missing_base_path_stalls_polling_for_every_model(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    good = tmp_path / "good"
    (good / "1").mkdir(parents=True)
    manager = make_manager()
    manager.wait_until_available_or_end(["good"], manager.set_sources({"good": source(good, name="good")}))
    manager.set_sources({"good": source(good, name="good"), "ghost": source(tmp_path / "ghost", name="ghost")})
    time.sleep(0.4)  # let a poll that started before "ghost" was added finish
    polls = manager.polls
    (good / "2").mkdir()
    time.sleep(0.6)
    assert states(manager, "good") == [(1, State.AVAILABLE)]
    assert manager.polls == polls  # every poll was dropped
    (tmp_path / "ghost" / "1").mkdir(parents=True)
    wait_until(lambda: states(manager, "good") == [(2, State.AVAILABLE), (1, State.END)])
    assert states(manager, "ghost") == [(1, State.AVAILABLE)]


def test_no_versions_on_disk_unloads_everything(tmp_path: Path, make_manager: Callable[..., ModelManager]) -> None:
    (tmp_path / "1").mkdir()
    manager = make_manager()
    manager.wait_until_available_or_end(["m"], manager.set_sources({"m": source(tmp_path)}))
    (tmp_path / "1").rename(tmp_path / "not-a-version")
    wait_until(lambda: states(manager, "m") == [(1, State.END)])
    with pytest.raises(TFServingError) as caught:
        manager.servable("m", None)
    assert caught.value.code == "NOT_FOUND"


def test_poll_wait_zero_polls_once_so_later_models_never_load(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    (first / "1").mkdir(parents=True)
    (later / "1").mkdir(parents=True)
    manager = make_manager(poll=0)
    # The source polls once, when it is created with the first config (server start).
    seq = manager.set_sources({"first": source(first, name="first")})
    assert manager.wait_until_available_or_end(["first"], seq)["first"].state == State.AVAILABLE
    manager.set_sources({"first": source(first, name="first"), "later": source(later, name="later")})
    time.sleep(0.5)
    with pytest.raises(TFServingError):
        manager.statuses("later")


def test_unloads_go_before_loads_across_all_models_one_action_per_tick(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    for name in ("a", "b", "z"):
        (tmp_path / name / "1").mkdir(parents=True)
    manager = make_manager(poll=0.1)
    sources = {name: source(tmp_path / name, name=name) for name in ("a", "z")}
    manager.wait_until_available_or_end(["a", "z"], manager.set_sources(sources))
    # Hold the manager thread inside an inline load of "b" while "a" gets a new version and "z" leaves.
    gate = loader.gates[("b", 1)] = threading.Event()
    manager.set_sources({**sources, "b": source(tmp_path / "b", name="b")})
    wait_until(lambda: ("b", 1) in loader.attempts)
    (tmp_path / "a" / "2").mkdir()
    polls = manager.polls
    wait_until(lambda: manager.polls >= polls + 2)
    manager.set_sources({"a": sources["a"], "b": source(tmp_path / "b", name="b")})
    gate.set()
    wait_until(lambda: states(manager, "a") == [(2, State.AVAILABLE), (1, State.END)])
    # "z" (an unload) goes before "a" (a load) although "a" sorts first; then a/1 unloads once a/2 serves.
    assert manager.actions[-4:] == [("load", "b", 1), ("unload", "z", 1), ("load", "a", 2), ("unload", "a", 1)]


def test_one_action_per_manager_tick(tmp_path: Path, make_manager: Callable[..., ModelManager]) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name / "1").mkdir(parents=True)
    manager = make_manager(manage_state_interval_seconds=0.4)
    sources = {name: source(tmp_path / name, name=name) for name in ("a", "b", "c")}
    started = time.monotonic()
    manager.wait_until_available_or_end(sources, manager.set_sources(sources))
    # Three loads need three ticks: the third starts no sooner than two intervals after the first tick.
    assert time.monotonic() - started >= 0.8
    assert [kind for kind, *_ in manager.actions] == ["load", "load", "load"]


def test_newest_aspired_versions_replace_older_ones_while_a_load_runs(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    (tmp_path / "1").mkdir()
    gate = loader.gates[("m", 1)] = threading.Event()
    manager = make_manager(poll=0.1)
    seq = manager.set_sources({"m": source(tmp_path)})
    wait_until(lambda: ("m", 1) in loader.attempts)
    for version in (2, 3):  # each seen by complete polls while the manager thread is busy loading v1
        (tmp_path / str(version)).mkdir()
        wait_for_polls(manager, 2)
    gate.set()
    manager.wait_until_available_or_end(["m"], seq)
    wait_until(lambda: states(manager, "m") == [(3, State.AVAILABLE), (1, State.END)])
    assert ("m", 2) not in loader.attempts  # the request naming v2 was replaced before it was handled


def test_manager_survives_volume_errors_and_polls_again(
    tmp_path: Path, make_manager: Callable[..., ModelManager], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    (tmp_path / "1").mkdir()
    manager = make_manager(poll=0.1)
    manager.wait_until_available_or_end(["m"], manager.set_sources({"m": source(tmp_path)}))
    real_listdir = discovery.os.listdir
    failures = [OSError(errno.EIO, "Input/output error"), PermissionError(errno.EACCES, "Permission denied")]

    def flaky_listdir(path: Any) -> list[str]:
        if failures:
            raise failures.pop(0)
        return real_listdir(path)

    (tmp_path / "2").mkdir()
    monkeypatch.setattr(discovery.os, "listdir", flaky_listdir)
    wait_until(lambda: states(manager, "m") == [(2, State.AVAILABLE), (1, State.END)])
    assert not failures
    assert caplog.text.count("FileSystemStoragePathSource encountered a filesystem access error") >= 2


def write_variables(version_dir: Path, size: int) -> None:
    (version_dir / "variables").mkdir(parents=True)
    (version_dir / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * size)
    (version_dir / "variables" / "variables.index").write_bytes(b"\0" * 10_000)  # not counted


def test_memory_budget_fails_a_version_that_does_not_fit_and_the_old_one_keeps_serving(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    write_variables(tmp_path / "m" / "1", 600)
    manager = make_manager(retries=1, memory_budget_bytes=1000)
    manager.wait_until_available_or_end(["m"], manager.set_sources({"m": source(tmp_path / "m")}))
    assert manager.memory_in_use() == 600
    write_variables(tmp_path / "m" / "2", 600)
    wait_until(lambda: states(manager, "m")[0] == (2, State.END))
    failed = manager.statuses("m")[0]
    assert failed.error_code == "RESOURCE_EXHAUSTED"
    assert "OOM when allocating" in failed.error_message
    assert "needs 600 bytes, 400 of 1000 bytes available" in failed.error_message
    assert ("m", 2) not in loader.attempts  # refused before the load function ran, on both tries
    assert manager.servable("m", None).version == 1
    assert manager.memory_in_use() == 600
    # Unloading gives the bytes back: a model that needs 900 then fits.
    write_variables(tmp_path / "n" / "1", 900)
    seq = manager.set_sources({"n": source(tmp_path / "n", name="n")})
    assert manager.wait_until_available_or_end(["n"], seq)["n"].state == State.AVAILABLE
    assert manager.memory_in_use() == 900


def test_versions_still_loading_count_against_the_budget(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    write_variables(tmp_path / "a" / "1", 600)
    write_variables(tmp_path / "b" / "1", 600)
    manager = make_manager(memory_budget_bytes=1000, load_delay_seconds=1.5, num_load_threads=2)
    sources = {name: source(tmp_path / name, name=name) for name in ("a", "b")}
    reached = manager.wait_until_available_or_end(["a", "b"], manager.set_sources(sources))
    # Both loads run at once (two load threads); the second one to start finds the first still LOADING.
    assert sorted(status.state for status in reached.values()) == [State.AVAILABLE, State.END]
    failed = next(status for status in reached.values() if status.state == State.END)
    assert failed.error_code == "RESOURCE_EXHAUSTED"


def test_loads_run_in_parallel_with_load_threads(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    gates = {name: threading.Event() for name in ("a", "b")}
    for name, gate in gates.items():
        (tmp_path / name / "1").mkdir(parents=True)
        loader.gates[(name, 1)] = gate
    manager = make_manager(num_load_threads=2)
    sources = {name: source(tmp_path / name, name=name) for name in gates}
    seq = manager.set_sources(sources)
    wait_until(lambda: ("a", 1) in loader.attempts and ("b", 1) in loader.attempts)
    assert states(manager, "a") == states(manager, "b") == [(1, State.LOADING)]
    for gate in gates.values():
        gate.set()
    reached = manager.wait_until_available_or_end(gates, seq)
    assert {status.state for status in reached.values()} == {State.AVAILABLE}


def test_start_waits_for_the_highest_version_that_reaches_available_or_end(
    tmp_path: Path, loader: Loader, make_manager: Callable[..., ModelManager]
) -> None:
    for version in (1, 2):
        (tmp_path / str(version)).mkdir()
    loader.fail_times[("m", 2)] = 1
    manager = make_manager(num_load_threads=0)
    seq = manager.set_sources({"m": source(tmp_path, VersionPolicy("all"))})
    # v2 loads first (highest first) and fails: that END decides, although v1 loads fine afterwards.
    reached = manager.wait_until_available_or_end(["m"], seq)["m"]
    assert (reached.version, reached.state, reached.error_code) == (2, State.END, "DATA_LOSS")
