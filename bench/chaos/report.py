"""The chaos run's figures: built from the calls, windows, events and watcher findings; printed as tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.chaos.faults import Event
from bench.chaos.invariants import Violations, Window, attribute, close_windows, failures_by_cause
from bench.chaos.load import SearchTally


def build(
    *,
    args: dict[str, Any],
    tally: SearchTally,
    windows: list[Window],
    events: Sequence[Event],
    violations: Violations,
    deaths: list[dict[str, object]],
    converge_seconds: float | None,
    converge_budget: float,
    scans: int,
    chaos_seconds: float,
    corrupt: Sequence[tuple[str, int]],
    recorded_failed: dict[tuple[str, int], set[str]],
) -> dict[str, Any]:
    calls = tally.calls
    close_windows(windows, calls)
    causes = failures_by_cause(calls, windows, tally.stalls)
    per_node = Counter(c.node for c in calls)
    unexplained = sum(n for table in causes.values() for cause, n in table.items() if cause.startswith("unexplained"))
    unexpected = [d for d in deaths if d["cause"] == "unexpected"]
    faults = Counter(e.kind for e in events)
    held: dict[str, float] = {}
    for e in events:
        held[e.kind] = held.get(e.kind, 0.0) + e.healed_at - e.injected_at
    invariants = {
        "failed calls only to a node whose model server is down or cut off": unexplained,
        "no partial version dir visible under a final name": len(violations.partial_versions),
        "every model in every models.config (none retired)": len(violations.config_missing),
        "every model AVAILABLE on every ready model server": len(violations.status_missing),
        f"converged within {converge_budget:.0f}s after the chaos": 0 if converge_seconds is not None else 1,
        "no process died on its own": len(unexpected),
    }
    return {
        "args": args,
        "chaos_seconds": round(chaos_seconds, 1),
        "faults": dict(sorted(faults.items())),
        "fault_seconds": {kind: round(held[kind], 1) for kind in sorted(faults)},
        "events": [e.as_dict() for e in events],
        "searches": tally.searches,
        "searches_over_killswitch": tally.tripped,
        "calls": len(calls),
        "failed": sum(1 for c in calls if c.code is not None),
        "per_node": {
            node: {"calls": per_node[node], "failed": dict(sorted(causes.get(node, Counter()).items()))}
            for node in sorted(per_node)
        },
        "windows": [
            {"node": w.node, "cause": w.cause, "start": round(w.start, 2), "end": w.end and round(w.end, 2)}
            for w in windows
        ],
        "unexplained_failures": [
            {"node": c.node, "at": round(c.start, 2), "code": c.code, "detail": c.detail}
            for c in calls
            if c.code is not None and attribute(c, windows, tally.stalls).startswith("unexplained")
        ][:50],
        "client_stalls": {
            "count": len(tally.stalls),
            "max_seconds": round(max((d for _, d in tally.stalls), default=0.0), 3),
        },
        "corrupt_versions": [f"{m}/{v}" for m, v in corrupt],
        # Where config_manager recorded each corrupt version failed (a node that never tried one, because
        # a good version followed before its puller saw it, is not wrong: the invariant is "never served").
        "corrupt_recorded_failed_on": {f"{m}/{v}": sorted(recorded_failed.get((m, v), ())) for m, v in corrupt},
        "invariants": invariants,
        "violations": {
            "partial_versions": violations.partial_versions[:20],
            "config_missing": violations.config_missing[:20],
            "status_missing": violations.status_missing[:20],
            "unexpected_deaths": unexpected,
        },
        "watcher_scans": scans,
        "converge_seconds": converge_seconds and round(converge_seconds, 1),
        "held": all(v == 0 for v in invariants.values()),
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"\nchaos: {report['chaos_seconds']:.0f}s of faults, seed {report['args']['seed']}"]
    lines.append("\nfaults injected          count  seconds (inject to heal)")
    seconds = report["fault_seconds"]
    lines += [f"  {kind:<22} {n:>5}  {seconds[kind]:>7.1f}" for kind, n in report["faults"].items()]
    lines.append(f"  {'total':<22} {sum(report['faults'].values()):>5}  {sum(seconds.values()):>7.1f}")
    lines.append("\nnode        calls    failed  by cause")
    for node, row in report["per_node"].items():
        failed = sum(row["failed"].values())
        causes = ", ".join(f"{cause}: {n}" for cause, n in row["failed"].items()) or "-"
        lines.append(f"  {node:<9} {row['calls']:>7} {failed:>8}  {causes}")
    lines.append(
        f"  {'all':<9} {report['calls']:>7} {report['failed']:>8}  in {report['searches']} searches "
        f"(15-45 calls, 600 ms deadline); {report['searches_over_killswitch']} over the 25% killswitch"
    )
    stalls = report["client_stalls"]
    lines.append(
        f"  the client's own event loop stalled {stalls['count']} times (>= 150 ms; max {stalls['max_seconds']} s)"
    )
    lines.append(f"\n{'invariant':<68} broken  result")
    for name, broken in report["invariants"].items():
        lines.append(f"  {name:<66} {broken:>6}  {'held' if broken == 0 else 'BROKEN'}")
    converge = report["converge_seconds"]
    recorded = report["corrupt_recorded_failed_on"]
    lines.append(
        f"\nconverged {converge}s after the last heal; {report['watcher_scans']} watcher scans; corrupt versions "
        "(never served; recorded failed on): "
        + (", ".join(f"{v} {len(nodes)}/{len(report['per_node'])} nodes" for v, nodes in recorded.items()) or "none")
    )
    for kind, items in report["violations"].items():
        for item in items[:5]:
            lines.append(f"  {kind}: {item}")
    for call in report["unexplained_failures"][:10]:
        lines.append(f"  unexplained: {call}")
    lines.append("\nALL INVARIANTS HELD" if report["held"] else "\nINVARIANTS BROKEN")
    return "\n".join(lines)
