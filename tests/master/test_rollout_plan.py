"""Wave planner, gate judge and rollout steps: pure functions, no processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.contracts import ModelPolicy, RolloutPolicy, TrafficCounters, resolve_model
from services.common.errors import Conflict
from services.master.rollout_gates import NodeFacts, judge_health, judge_traffic, p99_micros
from services.master.rollout_steps import TrafficWindow, advance, operate
from services.master.rollout_waves import plan_waves

HOSTS = [f"node-{i}" for i in range(1, 6)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RolloutPolicy(waves=[1, "50%", "100%"], bake_seconds=60, min_requests=20)


def traffic(ok: int, errors: int = 0, *, latency_ms: float = 1.0) -> TrafficCounters:
    bound = f"{latency_ms * 1000:g}"
    return TrafficCounters(
        requests={"OK": ok, "INVALID_ARGUMENT": errors} if errors else {"OK": ok},
        latency_buckets={bound: ok, "+Inf": ok},
    )


def facts(available: dict[str, list[int]], **overrides: NodeFacts) -> dict[str, NodeFacts]:
    result = {h: NodeFacts(healthy=True, available=available.get(h, [1])) for h in HOSTS}
    result.update(overrides)
    return result


def test_waves_are_cumulative_sorted_and_reach_every_node() -> None:
    assert plan_waves(list(reversed(HOSTS)), [1, "25%", "100%"]) == [
        ["node-1"],
        ["node-2"],
        ["node-3", "node-4", "node-5"],
    ]
    assert plan_waves(HOSTS, [1, "50%"]) == [["node-1"], ["node-2", "node-3", "node-4", "node-5"]]
    assert plan_waves(["a"], [1, "25%", "100%"]) == [["a"]]
    assert plan_waves([], [1]) == []
    with pytest.raises(ValueError, match="percentage"):
        RolloutPolicy(waves=["150%"])


def test_health_gate_fails_on_load_or_golden_failure_and_waits_for_unhealthy_nodes() -> None:
    golden = NodeFacts(healthy=True, available=[1], failed={"2": "GOLDEN_CHECK_FAILED: y differs"})
    verdict = judge_health(2, ["node-1"], facts({}, **{"node-1": golden}))
    assert (verdict.outcome, verdict.gate) == ("fail", "golden")
    down = judge_health(2, ["node-1", "node-2"], facts({"node-1": [2]}, **{"node-2": NodeFacts(healthy=False)}))
    assert (down.outcome, down.detail) == ("wait", "node-2 unhealthy")
    assert judge_health(2, ["node-1"], facts({"node-1": [2]})).outcome == "pass"


def test_traffic_gate_compares_the_wave_with_the_other_nodes() -> None:
    bad = judge_traffic([traffic(50, 50)], [traffic(400)], POLICY)
    assert (bad.outcome, bad.gate) == ("fail", "error-rate")
    assert "50.0%" in bad.detail
    slow = judge_traffic([traffic(100, latency_ms=200)], [traffic(400, latency_ms=2)], POLICY)
    assert (slow.outcome, slow.gate) == ("fail", "p99-latency")
    assert judge_traffic([traffic(100, latency_ms=2)], [traffic(400, latency_ms=2)], POLICY).outcome == "pass"
    quiet = judge_traffic([traffic(5, 5)], [traffic(400)], POLICY)
    assert quiet.outcome == "pass" and "not judged" in quiet.detail
    assert p99_micros({"10": 98, "100": 100, "+Inf": 100}) == 100.0


def start(policy: ModelPolicy) -> ModelPolicy:
    step = advance(policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({}), window=None, now=T0)
    assert step.action == "rollout start 2" and step.touched == ["node-1"]
    return step.policy


def test_a_good_version_goes_wave_by_wave_and_becomes_the_baseline() -> None:
    baseline = advance(ModelPolicy(), POLICY, complete=[1], hosts=HOSTS, facts=facts({}), window=None, now=T0)
    assert baseline.policy.pinned == [1]
    policy = start(baseline.policy)
    assert resolve_model(policy, [1, 2], node="node-1", rollout=True).serve == [2]
    assert resolve_model(policy, [1, 2], node="node-2", rollout=True).serve == [1]
    assert resolve_model(policy, [1, 2], node="node-1", rollout=True).keep == [1, 2]
    now = T0
    served = {"node-1": [2]}
    for wave in range(3):
        step = advance(policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts(served), window=None, now=now)
        assert step.policy.rollout_state is not None and step.policy.rollout_state.state == "baking"
        window = TrafficWindow(started_at=now, counters={})
        policy, now = step.policy, now + timedelta(seconds=61)
        step = advance(policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts(served), window=window, now=now)
        policy = step.policy
        assert policy.rollout_state is not None
        if wave < 2:
            assert policy.rollout_state.wave == wave + 1 and policy.rollout_state.state == "running"
            served.update({h: [2] for h in policy.rollout_state.waves[wave + 1].nodes})
    assert policy.rollout_state is not None and policy.rollout_state.state == "done"
    assert policy.pinned == [2] and policy.nodes == {}


def test_a_failed_gate_reverts_the_wave_and_marks_the_version_bad() -> None:
    policy = start(ModelPolicy(pinned=[1]))
    policy = advance(
        policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({"node-1": [2]}), window=None, now=T0
    ).policy
    window = TrafficWindow(started_at=T0, counters={h: traffic(0) for h in HOSTS})
    seen = facts({"node-1": [2]}, **{"node-1": NodeFacts(healthy=True, available=[2], traffic=traffic(10, 90))})
    seen = {
        h: (f if h == "node-1" else NodeFacts(healthy=True, available=[1], traffic=traffic(100)))
        for h, f in seen.items()
    }
    step = advance(policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=seen, window=window, now=T0)
    assert step.reverted and step.touched == ["node-1"]
    assert step.reason is not None and "error-rate" in step.reason and "90.0%" in step.reason
    assert step.policy.bad_versions == [2] and step.policy.nodes == {}
    assert resolve_model(step.policy, [1, 2], node="node-1", rollout=True).serve == [1]
    # No node takes a bad version by default, not even without a rollout policy.
    assert resolve_model(ModelPolicy(bad_versions=[2]), [1, 2]).serve == [1]
    again = advance(step.policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({}), window=None, now=T0)
    assert again.action is None


def test_an_unhealthy_wave_node_holds_the_wave_visibly() -> None:
    policy = start(ModelPolicy(pinned=[1]))
    seen = facts({}, **{"node-1": NodeFacts(healthy=False)})
    step = advance(policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=seen, window=None, now=T0 + timedelta(hours=1))
    assert step.waiting_for == "node-1 unhealthy" and step.policy == policy


def test_operator_commands() -> None:
    policy = start(ModelPolicy(pinned=[1]))
    paused = operate(policy, "pause", actor="ops", now=T0)
    assert paused.rollout_state is not None and paused.rollout_state.state == "paused"
    with pytest.raises(Conflict):
        operate(paused, "promote", actor="ops", now=T0)
    resumed = operate(paused, "resume", actor="ops", now=T0)
    assert resumed.rollout_state is not None and resumed.rollout_state.state == "running"
    promoted = operate(resumed, "promote", actor="ops", now=T0)
    baking = advance(promoted, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({"node-1": [2]}), window=None, now=T0)
    passed = advance(
        baking.policy, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({"node-1": [2]}), window=None, now=T0
    )
    assert passed.policy.rollout_state is not None and passed.policy.rollout_state.wave == 1
    aborted = operate(passed.policy, "abort", actor="ops", now=T0)
    assert aborted.rollout_state is not None and aborted.rollout_state.state == "aborted"
    assert aborted.nodes == {} and aborted.bad_versions == []
    held = advance(aborted, POLICY, complete=[1, 2], hosts=HOSTS, facts=facts({}), window=None, now=T0)
    assert held.action is None
    restarted = operate(aborted, "resume", actor="ops", now=T0)
    assert restarted.rollout_state is not None and restarted.rollout_state.wave == 0
    assert set(restarted.nodes) == {"node-1"}


def test_under_a_rollout_policy_a_node_never_advances_by_itself() -> None:
    policy = ModelPolicy(rollout=POLICY)
    # Before master wrote a baseline: the node holds what it served; a node that served nothing takes the latest.
    assert resolve_model(policy, [1, 2], node="node-4", rollout=True, hold=[1]).serve == [1]
    assert resolve_model(policy, [1, 2], node="node-4", rollout=True, hold=None).serve == [2]
    # Without a rollout policy the default policy moves on as before.
    assert resolve_model(ModelPolicy(), [1, 2], node="node-4", hold=[1]).serve == [2]
