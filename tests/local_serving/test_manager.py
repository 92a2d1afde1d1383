"""The version state machine and discovery, in process, with a controllable load function.

The load function is our own seam (``ModelManager(load=...)``), not a vendor SDK: it returns a real
:class:`Servable` without TensorFlow so these tests stay fast. Directories are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common.errors import TFServingError
from services.common.tfs import VersionState as State
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


def states(manager: ModelManager, name: str) -> list[tuple[int, State]]:
    return [(s.version, s.state) for s in manager.statuses(name)]


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
def make_manager(loader: Loader) -> Iterator[Callable[..., ModelManager]]:
    managers: list[ModelManager] = []

    def make(*, retries: int = 0, poll: float = 0.2) -> ModelManager:
        manager = ModelManager(
            load=loader, poll_wait_seconds=poll, max_num_load_retries=retries, load_retry_interval_seconds=0.05
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
    assert manager.wait_first_final(["m"], seq)["m"].state == State.AVAILABLE
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
    manager.wait_first_final(["m"], manager.set_sources({"m": source(tmp_path)}))
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
    assert manager.wait_first_final(["m"], manager.set_sources({"m": source(tmp_path)}))["m"].state == State.AVAILABLE
    assert loader.attempts == [("m", 1), ("m", 1)]


def test_missing_base_path_stalls_polling_for_every_model(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    good = tmp_path / "good"
    (good / "1").mkdir(parents=True)
    manager = make_manager()
    manager.wait_first_final(["good"], manager.set_sources({"good": source(good, name="good")}))
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
    manager.wait_first_final(["m"], manager.set_sources({"m": source(tmp_path)}))
    (tmp_path / "1").rename(tmp_path / "not-a-version")
    wait_until(lambda: states(manager, "m") == [(1, State.END)])
    with pytest.raises(TFServingError) as caught:
        manager.servable("m", None)
    assert caught.value.code == "NOT_FOUND"


def test_poll_wait_zero_polls_once_so_later_models_never_load(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    (tmp_path / "1").mkdir()
    manager = make_manager(poll=0)
    time.sleep(0.3)  # the single poll happens with no models configured
    manager.set_sources({"m": source(tmp_path)})
    time.sleep(0.5)
    with pytest.raises(TFServingError):
        manager.statuses("m")
