"""bench/switch's figures: latency per second around each switch against the steady state of the same run.

A *switch* on a node is the moment the node's model server first listed the new version AVAILABLE in the
served model (polled every 100 ms, watch.py). Its window is ``WINDOW`` seconds around that moment, and
only the calls to that node count in it (in production each node is its own machine; here they share
two cores, which the README notes). The steady state is every call made in the calm periods the run
holds between phases (no download, load or switch anywhere).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.invariants import attribute
from bench.chaos.load import Call

WINDOW = (-5, 10)  # seconds around the moment the new version became AVAILABLE on a node
GOAL_RATIO = 1.1  # issue 15: around-switch p99 <= 1.1x steady p99 with generated warm-up


def quantile(latencies: Sequence[float], q: float) -> float:
    """Nearest-rank quantile in milliseconds (0 for no calls)."""
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    return 1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_row(calls: Sequence[Call]) -> dict[str, float]:
    lat = [c.latency for c in calls]  # a failed call counts with its latency (600 ms at the deadline)
    return {
        "calls": len(calls),
        "p50_ms": round(quantile(lat, 0.5), 1),
        "p99_ms": round(quantile(lat, 0.99), 1),
        "max_ms": round(quantile(lat, 1.0), 1),
    }


@dataclass
class Phase:
    """One step of the run: a version published, and when each node switched to it (or rejected it)."""

    name: str
    version: int
    warmup: bool
    published: float  # seconds since the run's clock zero
    ended: float = 0.0
    available: dict[str, float] = field(default_factory=dict)  # node -> first seen AVAILABLE (served model)
    rejected: dict[str, str] = field(default_factory=dict)  # node -> failed.json message (the bad version)
    warmup_records: dict[str, int] = field(default_factory=dict)  # node -> records replayed for the served load


def in_window(call: Call, phase: Phase, offset: tuple[float, float] = WINDOW) -> float | None:
    """Seconds from the call's node's switch to the call's start, if inside ``offset``; else None."""
    switched = phase.available.get(call.node)
    if switched is None:
        return None
    delta = call.start - switched
    # A run that goes on for less than the window after a switch (--smoke) ends it with the phase.
    return delta if offset[0] <= delta < offset[1] and call.start < phase.ended else None


def phase_figures(phase: Phase, calls: Sequence[Call], steady_p99: float) -> dict[str, Any]:
    """Per-second p50/p99 around the phase's switches, the ratio to steady p99, failures, versions."""
    during = [c for c in calls if phase.published <= c.start < phase.ended]
    window = [(d, c) for c in calls if (d := in_window(c, phase)) is not None]
    seconds = []
    for second in range(*WINDOW):
        row = latency_row([c for d, c in window if second <= d < second + 1])
        seconds.append({"second": second, **row})
    around = latency_row([c for _, c in window])
    first_answers: dict[str, float] = {}
    for call in sorted(calls, key=lambda c: c.start):
        if call.version == phase.version and call.node not in first_answers and call.code is None:
            first_answers[call.node] = round(call.latency * 1000, 1)
    return {
        "name": phase.name,
        "version": phase.version,
        "generated_warmup": phase.warmup,
        "published_at": round(phase.published, 2),
        "seconds": round(phase.ended - phase.published, 1),
        "available_at": {n: round(t, 2) for n, t in sorted(phase.available.items())},
        "rejected": dict(sorted(phase.rejected.items())),
        "warmup_records_replayed": dict(sorted(phase.warmup_records.items())),
        "per_second": seconds,
        "around_switch": around,
        "ratio_p99": round(around["p99_ms"] / steady_p99, 2) if steady_p99 and window else None,
        "first_answer_ms": first_answers,
        "calls": len(during),
        "failed_by_code": dict(Counter(c.code for c in during if c.code is not None)),
        "versions_answered": sorted({c.version for c in during if c.version is not None}),
    }


def steady_calls(calls: Iterable[Call], calm: Sequence[tuple[float, float]]) -> list[Call]:
    return [c for c in calls if any(start <= c.start < end for start, end in calm)]


def build(
    *,
    args: dict[str, Any],
    calls: Sequence[Call],
    phases: Sequence[Phase],
    calm: Sequence[tuple[float, float]],
    stalls: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    steady = latency_row(steady_calls(calls, calm))
    versions: dict[str, list[int]] = {}
    for call in calls:
        if call.version is not None:
            versions.setdefault(call.node, [])
            if call.version not in versions[call.node]:
                versions[call.node].append(call.version)
    bad = args["bad_version"]
    failed = Counter(c.code for c in calls if c.code is not None)
    # A deadline missed while the bench's own client could not run (a starved process on a loaded machine)
    # is shown apart, as bench/chaos does: the fleet did not fail it.
    stalled = sum(1 for c in calls if c.code is not None and attribute(c, (), stalls) == "client stalled")
    return {
        "args": args,
        "steady": steady,
        "calm_periods": [[round(a, 2), round(b, 2)] for a, b in calm],
        "phases": [phase_figures(p, calls, steady["p99_ms"]) for p in phases],
        "calls": len(calls),
        "failed": sum(failed.values()),
        "failed_by_code": dict(failed),
        "failed_while_client_stalled": stalled,
        "client_stalls": [[round(start, 2), round(seconds, 2)] for start, seconds in stalls],
        "versions_answered": {n: sorted(v) for n, v in sorted(versions.items())},
        "bad_version_answered": sum(1 for c in calls if c.version == bad),
    }


def render(report: dict[str, Any]) -> str:
    steady = report["steady"]
    lines = [
        f"switch: {report['calls']} Predicts in searches of 15-45 (600 ms deadline) over "
        f"{len(report['versions_answered'])} nodes, {report['args']['layers']} first-call layers",
        f"steady state: {steady['calls']} calls, p50 {steady['p50_ms']} ms, p99 {steady['p99_ms']} ms, "
        f"max {steady['max_ms']} ms",
    ]
    for phase in report["phases"]:
        lines.append("")
        warm = "with" if phase["generated_warmup"] else "without"
        lines.append(
            f"{phase['name']} (v{phase['version']}, {warm} generated warm-up): {phase['seconds']}s, "
            f"{phase['calls']} calls, failed {phase['failed_by_code'] or 0}"
        )
        if phase["rejected"]:
            lines.append(f"  rejected on {sorted(phase['rejected'])}: {next(iter(phase['rejected'].values()))[:150]}")
        if not phase["available_at"]:
            continue
        lines.append(f"  AVAILABLE at {phase['available_at']}; first answer (ms) {phase['first_answer_ms']}")
        if phase["generated_warmup"]:
            lines.append(f"  warm-up records replayed by the served load: {phase['warmup_records_replayed']}")
        lines.append("  second   calls   p50 ms   p99 ms   max ms")
        for row in phase["per_second"]:
            if not row["calls"]:
                continue
            lines.append(
                f"  {row['second']:+6d} {row['calls']:7d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f}"
                f" {row['max_ms']:8.1f}"
            )
        around = phase["around_switch"]
        goal = f" (goal <= {GOAL_RATIO})" if phase["generated_warmup"] else " (no goal: the spike)"
        lines.append(
            f"  around the switch ({WINDOW[0]}..+{WINDOW[1]} s): p50 {around['p50_ms']} ms, p99 {around['p99_ms']} ms,"
            f" max {around['max_ms']} ms; p99 / steady p99 = {phase['ratio_p99']}{goal}"
        )
    lines.append("")
    lines.append(f"failed calls by code: {report['failed_by_code'] or 'none'}")
    stalls = report["client_stalls"]
    lines.append(
        f"  of which while the bench's own client was stalled (>= 150 ms, {len(stalls)} times): "
        f"{report['failed_while_client_stalled']}"
    )
    lines.append(f"versions that answered production calls, per node: {report['versions_answered']}")
    bad = report["args"]["bad_version"]
    lines.append(f"bad version {bad} answered {report['bad_version_answered']} production calls (goal 0)")
    if "load_average" in report:
        start, end = (report["load_average"][k][0] for k in ("start", "end"))
        lines.append(f"machine load average (1 min): {start:.1f} at the start, {end:.1f} at the end")
    return "\n".join(lines)
