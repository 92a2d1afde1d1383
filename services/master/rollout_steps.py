"""One step of a model's rollout, and the operator's commands: pure functions on the model's policy.

master's driver calls :func:`advance` every poll interval with the latest facts; whatever it returns is
written to the state document (with a generation precondition) before nodes act on it, so a restarted
master simply continues from the document. The rule (docs/architecture.md, "Rollout"):

- No baseline yet (``pinned`` unset): pin the version the healthy nodes serve now (else the newest good
  complete one).
- No active rollout and a complete version above the baseline that is not bad: start one. Waves are
  planned over the registered nodes; the nodes of each wave reached get ``nodes[host].pinned``.
- A wave runs until every node of it has the version AVAILABLE, then bakes; health gates are checked on
  every step, traffic gates while baking; a failed gate reverts (the reached nodes lose their pin, the
  version joins ``bad_versions``). Once baked (or promoted), the next wave starts; after the last one the
  baseline moves to the new version and the per-node pins go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.common.contracts import ModelPolicy, RolloutPolicy, RolloutRecord, TrafficCounters, Wave
from services.common.errors import Conflict
from services.master.rollout_gates import NodeFacts, Verdict, judge_health, judge_traffic, traffic_delta
from services.master.rollout_waves import plan_waves, rollout_overrides


@dataclass
class Step:
    """The policy to write (equal to the input = nothing to write), its audit action and what it touched."""

    policy: ModelPolicy
    action: str | None = None
    reason: str | None = None
    waiting_for: str | None = None
    reverted: bool = False
    touched: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrafficWindow:
    """Counters per node when master began watching the current bake (after a restart: when it resumed)."""

    started_at: datetime
    counters: Mapping[str, TrafficCounters]


def advance(
    policy: ModelPolicy,
    rollout: RolloutPolicy,
    *,
    complete: Sequence[int],
    hosts: Sequence[str],
    facts: Mapping[str, NodeFacts],
    window: TrafficWindow | None,
    now: datetime,
) -> Step:
    """The next step of one model (module docstring)."""
    p = policy.model_copy(deep=True)
    if not p.enabled:
        return Step(p)
    record = p.rollout_state
    if record is not None and record.active:
        return _drive(p, record, rollout, facts=facts, window=window, now=now)
    candidates = sorted(set(complete) - set(p.bad_versions))
    if not candidates:
        return Step(p)
    if p.pinned is None:
        serving = [max(f.available) for f in facts.values() if f.healthy and f.available]
        baseline = max((v for v in serving if v in candidates), default=candidates[-1])
        p.pinned = [baseline]
        return Step(p, action=f"rollout baseline {baseline}", touched=sorted(hosts))
    newest = candidates[-1]
    if newest <= max(p.pinned) or (record is not None and record.version == newest and record.state == "aborted"):
        return Step(p)
    waves = plan_waves(hosts, rollout.waves)
    if not waves:
        return Step(p, waiting_for="no registered node")
    record = RolloutRecord(
        version=newest,
        previous=sorted(p.pinned),
        waves=[Wave(nodes=nodes) for nodes in waves],
        bake_seconds=rollout.bake_seconds,
        started_at=now,
        updated_at=now,
    )
    return _start_wave(p, record, 0, now=now, action=f"rollout start {newest}")


def _start_wave(p: ModelPolicy, record: RolloutRecord, index: int, *, now: datetime, action: str) -> Step:
    record.wave, record.state, record.promoted, record.updated_at = index, "running", False, now
    wave = record.waves[index]
    wave.state, wave.started_at, wave.baking_since = "running", now, None
    p.rollout_state = record
    p.nodes = rollout_overrides(p, record)
    return Step(p, action=action, touched=list(wave.nodes))


def _drive(
    p: ModelPolicy,
    record: RolloutRecord,
    rollout: RolloutPolicy,
    *,
    facts: Mapping[str, NodeFacts],
    window: TrafficWindow | None,
    now: datetime,
) -> Step:
    expected = rollout_overrides(p, record)
    touched = sorted(set(expected) ^ set(p.nodes))
    p.nodes = expected
    if record.state == "paused":
        return Step(p, action="rollout targets" if touched else None, touched=touched)
    wave = record.waves[record.wave]
    health = judge_health(record.version, wave.nodes, facts)
    if health.outcome == "fail":
        return revert(p, health, now=now)
    waiting_for = health.detail if health.outcome == "wait" and health.gate != "loading" else None
    if record.state == "running":
        if health.outcome == "wait":
            return Step(p, waiting_for=waiting_for, touched=touched)
        record.state, wave.state, wave.baking_since, record.updated_at = "baking", "baking", now, now
        return Step(p, action=f"rollout wave {record.wave + 1}/{len(record.waves)} baking", touched=touched)
    traffic = _traffic_verdict(wave.nodes, rollout, facts=facts, window=window)
    if traffic is not None and traffic.outcome == "fail":
        return revert(p, traffic, now=now)
    if health.outcome == "wait":
        return Step(p, waiting_for=waiting_for, touched=touched)
    if not record.promoted and bake_remaining(record, window, now=now) > 0:
        return Step(p, touched=touched)
    wave.state = "passed"
    if record.wave + 1 < len(record.waves):
        return _start_wave(p, record, record.wave + 1, now=now, action=f"rollout wave {record.wave + 2}")
    record.state, record.updated_at = "done", now
    p.pinned = [record.version]
    p.nodes = rollout_overrides(p, record)
    return Step(p, action=f"rollout done {record.version}", touched=sorted(facts))


def _traffic_verdict(
    wave_nodes: Sequence[str],
    rollout: RolloutPolicy,
    *,
    facts: Mapping[str, NodeFacts],
    window: TrafficWindow | None,
) -> Verdict | None:
    if window is None:
        return None
    deltas = {
        host: traffic_delta(window.counters.get(host), node.traffic)
        for host, node in facts.items()
        if node.healthy and host in window.counters
    }
    wave = [d for h, d in deltas.items() if h in wave_nodes and d is not None]
    others = [d for h, d in deltas.items() if h not in wave_nodes and d is not None]
    return judge_traffic(wave, others, rollout)


def bake_remaining(record: RolloutRecord, window: TrafficWindow | None, *, now: datetime) -> float:
    """Seconds of bake left in the current wave: from the document's ``baking_since`` and from master's
    own traffic window (a restarted master watches a whole bake of traffic again)."""
    wave = record.waves[record.wave]
    if wave.baking_since is None:
        return record.bake_seconds
    since = max(wave.baking_since, window.started_at) if window is not None else wave.baking_since
    return max(0.0, record.bake_seconds - (now - since).total_seconds())


def revert(p: ModelPolicy, verdict: Verdict, *, now: datetime) -> Step:
    """Send the reached nodes back to the baseline and mark the version bad fleet-wide."""
    record = p.rollout_state
    assert record is not None
    reached = record.reached_nodes()
    record.state, record.updated_at = "reverted", now
    record.waves[record.wave].state = "failed"
    record.reason = f"{verdict.gate} gate failed in wave {record.wave + 1}: {verdict.detail}"
    p.bad_versions = sorted(set(p.bad_versions) | {record.version})
    p.nodes = rollout_overrides(p, record)
    return Step(p, action=f"rollout revert {record.version}", reason=record.reason, reverted=True, touched=reached)


def operate(p: ModelPolicy, command: str, *, actor: str, now: datetime) -> ModelPolicy:
    """pause | resume | abort | promote (Conflict when the rollout's state does not allow it)."""
    record = p.rollout_state
    if record is None:
        raise Conflict("no rollout recorded for this model")
    if command == "resume" and record.state == "aborted":
        if record.version in p.bad_versions:
            raise Conflict(f"version {record.version} is marked bad: upload a new version or pin it explicitly")
        record.waves = [Wave(nodes=w.nodes) for w in record.waves]
        record.reason = None
        return _start_wave(p, record, 0, now=now, action="").policy
    if not record.active:
        raise Conflict(f"the rollout of version {record.version} is {record.state}: nothing to {command}")
    if command == "pause":
        if record.state == "paused":
            raise Conflict("the rollout is already paused")
        record.state = "paused"
    elif command == "resume":
        if record.state != "paused":
            raise Conflict("the rollout is not paused")
        return _start_wave(p, record, record.wave, now=now, action="").policy
    elif command == "abort":
        record.state, record.reason = "aborted", f"aborted by {actor}"
        record.waves[record.wave].state = "aborted"
        p.nodes = rollout_overrides(p, record)
    elif command == "promote":
        if record.state == "paused":
            raise Conflict("the rollout is paused: resume it first")
        record.promoted = True
    else:
        raise ValueError(f"unknown rollout command {command!r}")
    record.updated_at = now
    return p
