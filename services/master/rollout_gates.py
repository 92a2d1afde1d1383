"""The gate judge of a rollout wave: pure functions over what master's polls saw on each node.

- Health gates: every node of the wave has the version AVAILABLE (config_manager makes it AVAILABLE only
  after its golden checks passed); a load failure, a golden rejection (both in ``failed``) or a capacity
  shortfall of the version on a wave node fails the wave at once. A wave node that is unhealthy
  (partitioned, sidecars down) neither passes nor fails: the wave waits, and says for whom.
- Traffic gates, over the bake time (counter deltas since the bake began): the wave's error rate
  (``request_count`` with a status other than OK) may exceed the other nodes' by
  ``max_error_rate_increase``; the wave's p99 Predict latency (``request_latency`` histogram) may exceed
  ``max_p99_ratio`` times the other nodes' p99 + ``p99_slack_ms``. They judge only once the wave saw
  ``min_requests`` requests; p99 also needs ``P99_MIN_SAMPLES`` successful calls on each side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.common.contracts import RolloutPolicy, TrafficCounters

Outcome = Literal["pass", "fail", "wait"]
PERCENTILE = 0.99
#: Latency samples each side needs before p99 is compared: below that, p99 is the slowest call or two,
#: and one cold or unlucky call would decide.
P99_MIN_SAMPLES = 100


@dataclass(frozen=True)
class NodeFacts:
    """One node's view of the model from master's latest poll."""

    healthy: bool
    available: Sequence[int] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    capacity: Sequence[int] = ()
    traffic: TrafficCounters | None = None


@dataclass(frozen=True)
class Verdict:
    """``pass``, ``fail`` (with the gate and its figures) or ``wait`` (with what it waits for)."""

    outcome: Outcome
    gate: str | None = None
    detail: str = ""


def judge_health(version: int, wave_nodes: Sequence[str], facts: Mapping[str, NodeFacts]) -> Verdict:
    """Health gates of a wave (module docstring); ``pass`` = every node healthy and AVAILABLE."""
    for host in sorted(wave_nodes):
        node = facts.get(host)
        if node is None:
            continue
        if str(version) in node.failed:
            gate = "golden" if "GOLDEN_CHECK_FAILED" in node.failed[str(version)] else "load"
            return Verdict("fail", gate, f"{host}: version {version} failed: {node.failed[str(version)]}")
        if version in node.capacity:
            return Verdict("fail", "capacity", f"{host}: version {version} does not fit in tfserving's memory")
    unhealthy = [h for h in sorted(wave_nodes) if h not in facts or not facts[h].healthy]
    if unhealthy:
        return Verdict("wait", detail=", ".join(unhealthy) + " unhealthy")
    loading = [h for h in sorted(wave_nodes) if version not in facts[h].available]
    if loading:
        return Verdict("wait", "loading", f"version {version} not AVAILABLE on {', '.join(loading)} yet")
    return Verdict("pass")


def traffic_delta(before: TrafficCounters | None, after: TrafficCounters | None) -> TrafficCounters | None:
    """Counters seen between two reads; None when unknown or when a counter went back (tfserving restarted)."""
    if after is None:
        return None
    before = before or TrafficCounters()
    requests = {k: v - before.requests.get(k, 0) for k, v in after.requests.items()}
    buckets = {k: v - before.latency_buckets.get(k, 0) for k, v in after.latency_buckets.items()}
    if any(v < 0 for v in (*requests.values(), *buckets.values())):
        return None
    return TrafficCounters(requests=requests, latency_buckets=buckets)


def merged(counters: Sequence[TrafficCounters]) -> TrafficCounters:
    """Counters of several nodes added up."""
    total = TrafficCounters()
    for c in counters:
        for k, v in c.requests.items():
            total.requests[k] = total.requests.get(k, 0) + v
        for k, v in c.latency_buckets.items():
            total.latency_buckets[k] = total.latency_buckets.get(k, 0) + v
    return total


def p99_micros(buckets: Mapping[str, int]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile (cumulative buckets); None if empty.
    The overflow bucket reports the largest finite bound."""
    bounds = sorted((float(k), v) for k, v in buckets.items())
    count = bounds[-1][1] if bounds else 0
    if count <= 0:
        return None
    finite = [b for b, _ in bounds if b != float("inf")]
    for bound, cumulative in bounds:
        if cumulative >= PERCENTILE * count:
            return bound if bound != float("inf") else (finite[-1] if finite else None)
    return None


def judge_traffic(wave: Sequence[TrafficCounters], others: Sequence[TrafficCounters], policy: RolloutPolicy) -> Verdict:
    """Traffic gates over the bake so far: ``fail`` on evidence of harm, ``pass`` otherwise (including
    too little traffic to judge: the detail says so)."""
    mine, theirs = merged(wave), merged(others)
    if mine.total < policy.min_requests:
        return Verdict("pass", detail=f"{mine.total} requests on the wave, below {policy.min_requests}: not judged")
    rate = mine.errors / mine.total
    base = theirs.errors / theirs.total if theirs.total else 0.0
    if rate > base + policy.max_error_rate_increase:
        return Verdict(
            "fail",
            "error-rate",
            f"wave error rate {rate:.1%} ({mine.errors}/{mine.total}) vs {base:.1%} "
            f"({theirs.errors}/{theirs.total}) on the other nodes, margin {policy.max_error_rate_increase:.1%}",
        )
    samples = min(mine.latency_buckets.get("+Inf", 0), theirs.latency_buckets.get("+Inf", 0))
    wave_p99, other_p99 = p99_micros(mine.latency_buckets), p99_micros(theirs.latency_buckets)
    if samples < P99_MIN_SAMPLES or wave_p99 is None or other_p99 is None:
        return Verdict("pass", detail=f"error rate {rate:.1%} vs {base:.1%}; too few latency samples for p99")
    limit = other_p99 * policy.max_p99_ratio + policy.p99_slack_ms * 1000
    if wave_p99 > limit:
        return Verdict(
            "fail",
            "p99-latency",
            f"wave p99 {wave_p99 / 1000:.1f} ms vs {other_p99 / 1000:.1f} ms on the other nodes "
            f"(limit {limit / 1000:.1f} ms = x{policy.max_p99_ratio:g} + {policy.p99_slack_ms:g} ms)",
        )
    return Verdict("pass", detail=f"error rate {rate:.1%} vs {base:.1%}; p99 {wave_p99 / 1000:.1f} ms")
