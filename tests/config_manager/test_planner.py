"""The planner's rules, one user-visible promise per test (pure functions, no tfserving)."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.contracts import LocalModelTarget
from services.common.tfs import ModelEntry, VersionState
from services.config_manager.planner import ModelObservation, config_entries, plan_config, plan_model
from services.config_manager.signatures import InputSignature

A = VersionState.AVAILABLE
L = VersionState.LOADING
E = VersionState.END

SIG_X = InputSignature(inputs=(("x", "DT_FLOAT", (-1, 1)),))
SIG_FEATURES = InputSignature(inputs=(("features", "DT_FLOAT", (-1, 2)),))


def obs(
    *,
    target: LocalModelTarget | None,
    disk: set[int],
    live: Mapping[int, VersionState] | None = None,
    current: tuple[tuple[int, ...], dict[str, int]] | None = None,
    failed: Mapping[int, str] | None = None,
    sigs: Mapping[int, InputSignature] | None = None,
) -> ModelObservation:
    return ModelObservation(
        name="m",
        base_path="/models/m",
        target=target,
        on_disk=frozenset(disk),
        failed=failed or {},
        live=live,
        current=ModelEntry("m", "/models/m", current[0], current[1]) if current else None,
        signatures=sigs if sigs is not None else dict.fromkeys(disk, SIG_X),
    )


def t(
    serve: list[int], keep: list[int] | None = None, labels: dict[str, int] | None = None, **kw: bool
) -> LocalModelTarget:
    return LocalModelTarget(serve=serve, keep=keep or [], labels=labels or {}, **kw)


def versions(plan_entry: ModelEntry | None) -> tuple[int, ...]:
    return plan_entry.versions if plan_entry else ()


def test_first_deployment_serves_the_target_as_specific_versions() -> None:
    plan = plan_model(obs(target=t([1]), disk={1}))
    assert plan.entry == ModelEntry("m", "/models/m", (1,), {})
    assert not plan.settled  # not AVAILABLE yet


def test_version_not_on_disk_is_left_out_and_reported() -> None:
    plan = plan_model(obs(target=t([1]), disk=set()))
    assert plan.entry is None
    assert any("not on disk" in n for n in plan.notes)


def test_roll_keeps_old_version_until_new_one_is_available() -> None:
    step1 = plan_model(obs(target=t([2]), disk={1, 2}, live={1: A}, current=((1,), {})))
    assert versions(step1.entry) == (1, 2)
    loading = plan_model(obs(target=t([2]), disk={1, 2}, live={1: A, 2: L}, current=((1, 2), {})))
    assert versions(loading.entry) == (1, 2)
    done = plan_model(obs(target=t([2]), disk={1, 2}, live={1: A, 2: A}, current=((1, 2), {})))
    assert versions(done.entry) == (2,)
    assert done.settled


def test_label_moves_only_after_new_version_is_available() -> None:
    target = t([2], labels={"stable": 2})
    step1 = plan_model(obs(target=target, disk={1, 2}, live={1: A}, current=((1,), {"stable": 1})))
    assert step1.entry is not None
    assert step1.entry.labels == {"stable": 1}
    assert versions(step1.entry) == (1, 2)
    loading = plan_model(obs(target=target, disk={1, 2}, live={1: A, 2: L}, current=((1, 2), {"stable": 1})))
    assert loading.entry is not None and loading.entry.labels == {"stable": 1}
    moved = plan_model(obs(target=target, disk={1, 2}, live={1: A, 2: A}, current=((1, 2), {"stable": 1})))
    assert moved.entry == ModelEntry("m", "/models/m", (2,), {"stable": 2})


def test_new_label_is_not_written_before_its_version_is_available() -> None:
    plan = plan_model(obs(target=t([1], labels={"stable": 1}), disk={1}, live=None))
    assert plan.entry is not None and plan.entry.labels == {}
    later = plan_model(obs(target=t([1], labels={"stable": 1}), disk={1}, live={1: A}, current=((1,), {})))
    assert later.entry is not None and later.entry.labels == {"stable": 1}


def test_label_never_points_at_a_version_that_is_not_available() -> None:
    # Current config claims a label on 1 but 1 is not AVAILABLE (e.g. tfserving restarting): drop it.
    plan = plan_model(obs(target=t([1], labels={"stable": 1}), disk={1}, live={1: L}, current=((1,), {"stable": 1})))
    assert plan.entry is not None and plan.entry.labels == {}


def test_changed_input_signature_is_held_and_old_version_keeps_serving() -> None:
    sigs = {1: SIG_X, 2: SIG_FEATURES}
    plan = plan_model(
        obs(
            target=t([2], labels={"stable": 2}),
            disk={1, 2},
            live={1: A, 2: A},
            current=((1, 2), {"stable": 1}),
            sigs=sigs,
        )
    )
    assert plan.entry == ModelEntry("m", "/models/m", (1,), {"stable": 1})
    assert [h.version for h in plan.held] == [2]
    assert "features" in plan.held[0].reason and "x:DT_FLOAT" in plan.held[0].reason
    assert not plan.settled


def test_signature_change_allowed_by_desired_json_goes_through() -> None:
    sigs = {1: SIG_X, 2: SIG_FEATURES}
    target = t([2], labels={"stable": 2}, allow_signature_change=True)
    plan = plan_model(obs(target=target, disk={1, 2}, live={1: A, 2: A}, current=((1, 2), {"stable": 1}), sigs=sigs))
    assert plan.entry == ModelEntry("m", "/models/m", (2,), {"stable": 2})
    assert plan.held == ()


def test_unread_signature_of_available_version_keeps_old_version() -> None:
    plan = plan_model(obs(target=t([2]), disk={1, 2}, live={1: A, 2: A}, current=((1, 2), {}), sigs={1: SIG_X}))
    assert versions(plan.entry) == (1, 2)
    assert any("not read yet" in n for n in plan.notes)


def test_failed_version_is_dropped_and_previous_keeps_serving() -> None:
    plan = plan_model(
        obs(target=t([4]), disk={3, 4}, live={3: A, 4: E}, current=((3, 4), {}), failed={4: "NOT_FOUND: no pb"})
    )
    assert versions(plan.entry) == (3,)
    assert any("failed to load" in n for n in plan.notes)


def test_label_stays_on_old_version_when_target_failed() -> None:
    target = t([3, 4], labels={"stable": 4})
    plan = plan_model(
        obs(target=target, disk={2, 3, 4}, live={2: A, 3: A}, current=((2, 3), {"stable": 2}), failed={4: "x"})
    )
    assert plan.entry is not None
    assert plan.entry.labels == {"stable": 2}
    assert 2 in plan.entry.versions  # a label keeps its version in the config


def test_model_absent_from_desired_keeps_serving() -> None:
    plan = plan_model(obs(target=None, disk={5}, live={5: A}, current=((5,), {"canary": 5})))
    assert plan.entry == ModelEntry("m", "/models/m", (5,), {"canary": 5})
    assert any("not in desired.json" in n for n in plan.notes)


def test_only_enabled_false_retires_a_model() -> None:
    plan = plan_model(obs(target=t([], enabled=False), disk={5}, live={5: A}, current=((5,), {})))
    assert plan.entry is None


def test_empty_serve_set_does_not_empty_the_model() -> None:
    plan = plan_model(obs(target=t([]), disk={5}, live={5: A}, current=((5,), {})))
    assert versions(plan.entry) == (5,)


def test_version_deleted_from_disk_leaves_the_config() -> None:
    plan = plan_model(obs(target=t([2]), disk={2}, live={1: A, 2: A}, current=((1, 2), {})))
    assert versions(plan.entry) == (2,)


def test_latest_policy_in_a_hand_written_config_is_replaced_without_a_gap() -> None:
    # `latest` entries parse to versions=(); what serves is what is AVAILABLE.
    plan = plan_model(obs(target=t([2]), disk={1, 2}, live={1: A}, current=((), {})))
    assert versions(plan.entry) == (1, 2)


def test_rollback_to_lower_pinned_version() -> None:
    step1 = plan_model(obs(target=t([1]), disk={1, 2}, live={2: A, 1: E}, current=((2,), {})))
    assert versions(step1.entry) == (1, 2)
    step2 = plan_model(obs(target=t([1]), disk={1, 2}, live={2: A, 1: A}, current=((1, 2), {})))
    assert versions(step2.entry) == (1,)


def test_config_is_sorted_and_skips_models_out_of_config() -> None:
    a = ModelObservation(name="b", base_path="/m/b", target=t([1]), on_disk=frozenset({1}))
    b = ModelObservation(name="a", base_path="/m/a", target=t([1]), on_disk=frozenset({1}))
    c = ModelObservation(name="c", base_path="/m/c", target=t([1], enabled=False), on_disk=frozenset({1}))
    entries = config_entries(plan_config([a, b, c]))
    assert [e.name for e in entries] == ["a", "b"]


@settings(max_examples=300, deadline=None)
@given(
    serve=st.sets(st.integers(1, 6), max_size=3),
    disk=st.sets(st.integers(1, 6), max_size=6),
    current=st.sets(st.integers(1, 6), max_size=3),
    available=st.sets(st.integers(1, 6), max_size=6),
    failed=st.sets(st.integers(1, 6), max_size=2),
    label_target=st.one_of(st.none(), st.integers(1, 6)),
    label_now=st.one_of(st.none(), st.integers(1, 6)),
    changed=st.sets(st.integers(1, 6), max_size=2),
)
def test_invariants_hold_for_any_state(
    serve: set[int],
    disk: set[int],
    current: set[int],
    available: set[int],
    failed: set[int],
    label_target: int | None,
    label_now: int | None,
    changed: set[int],
) -> None:
    """Whatever the state: safe to restart from, and never empty by accident."""
    labels = {"stable": label_target} if label_target is not None else {}
    serve_all = serve | set(labels.values())
    now_labels = {"stable": label_now} if label_now is not None and label_now in current else {}
    live = dict.fromkeys(available, A)
    sigs = {v: SIG_FEATURES if v in changed else SIG_X for v in disk}
    plan = plan_model(
        obs(
            target=t(sorted(serve_all), labels=labels),
            disk=disk,
            live=live,
            current=(tuple(sorted(current)), now_labels) if current else None,
            failed=dict.fromkeys(failed, "boom"),
            sigs=sigs,
        )
    )
    entry = plan.entry
    in_config = set(versions(entry))
    # Safe to restart from: versions exist on disk, none failed, labels only on AVAILABLE listed versions.
    assert in_config <= disk
    assert not in_config & failed
    if entry is not None:
        for version in entry.labels.values():
            assert version in in_config and version in available
    # Never empty by accident: what serves now (AVAILABLE, on disk, not failed) stays unless a
    # wanted version is AVAILABLE to replace it.
    serving_now = current & available & disk - failed
    if serving_now and not in_config & available:
        raise AssertionError(f"model emptied: serving {serving_now}, next config {in_config}")
