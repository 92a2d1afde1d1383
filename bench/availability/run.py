"""bench/availability: failed Predicts out of >= 10,000 during a rollout, a rollback and sidecar restarts.

A client like the search cluster (tests.support.predict_loop: round-robin over every node's gRPC port,
one persistent channel per node, 600 ms deadline per call, answers checked: y = version * x) runs
against a local fleet while:
1. rollout: version 2 is published; wait until AVAILABLE (only) on every node;
2. rollback: ``POST /v1/models/<model>/rollback`` on master (admin API); wait until 1 is back everywhere;
3. restarts: every node's puller and config_manager restarted (SIGTERM, then start, one node at a time),
   and once more with SIGKILL (a crash);
then keeps calling until at least ``--calls`` Predicts were made. Goal: 0 failed. Exit status 1 if any.

    .venv/bin/python bench/availability/run.py            # 3 nodes, >= 10,000 calls
    .venv/bin/python bench/availability/run.py --smoke    # 2 nodes, >= 1,000 calls, node-1 restarted (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.workdir import finish  # noqa: E402
from services.local_fleet.convergence import wait_available  # noqa: E402
from services.local_fleet.fleet import FleetOptions, LocalFleet  # noqa: E402
from tests.support.predict_loop import PredictLoop, PredictStats  # noqa: E402
from tests.support.savedmodels import write_model  # noqa: E402

MODEL = "availability"


def converge(fleet: LocalFleet, versions: list[int], timeout: float = 120.0) -> None:
    asyncio.run(wait_available(fleet.nodes, MODEL, versions, timeout=timeout))


def restart_sidecars(fleet: LocalFleet, *, crash: bool, nodes: int) -> None:
    """The first ``nodes`` nodes' puller and config_manager, one node at a time, each waited healthy again."""
    for node in fleet.nodes[:nodes]:
        for role in ("puller", "config_manager"):
            proc = node.processes[role]
            if crash:
                proc.kill()
                proc.start()
            else:
                proc.restart()
            proc.wait_healthy(60)


def phase(loop: PredictLoop, name: str, marks: list[dict[str, Any]], action: Any) -> None:
    """Run ``action`` and record the loop's tally before and after it."""
    before = loop.snapshot()
    began = time.monotonic()
    action()
    after = loop.snapshot()
    marks.append(
        {
            "phase": name,
            "seconds": round(time.monotonic() - began, 2),
            "calls": after.total - before.total,
            "failed": after.failed - before.failed,
        }
    )
    print(f"  {name}: {marks[-1]['seconds']:.1f}s, {marks[-1]['calls']} calls, {marks[-1]['failed']} failed")


def rollback(fleet: LocalFleet) -> None:
    with fleet.admin(timeout=30) as admin:
        etag = admin.get(f"/v1/models/{MODEL}").headers["etag"]  # a write names the generation it is based on
        response = admin.post(f"/v1/models/{MODEL}/rollback", headers={"If-Match": etag})
        response.raise_for_status()
    converge(fleet, [1])


def run(args: argparse.Namespace) -> tuple[PredictStats, list[dict[str, Any]]]:
    models = Path(tempfile.mkdtemp(prefix="bench-availability-models-"))
    try:
        v1, v2 = write_model(models, 1), write_model(models, 2)
        return _run_fleet(args, v1, v2)
    finally:
        shutil.rmtree(models, ignore_errors=True)


def _run_fleet(args: argparse.Namespace, v1: Path, v2: Path) -> tuple[PredictStats, list[dict[str, Any]]]:
    root = Path(tempfile.mkdtemp(prefix="bench-availability-"))
    fleet = LocalFleet(root / "fleet", FleetOptions(nodes=args.nodes, sync_interval=2.0, quiet_period=1.0))
    marks: list[dict[str, Any]] = []
    try:
        print(f"starting fleet: {args.nodes} nodes")
        fleet.start()
        fleet.publish(MODEL, v1)
        converge(fleet, [1])
        targets = {n.hostname: n.grpc_target for n in fleet.nodes}
        loop = PredictLoop(targets, MODEL, deadline=0.6, concurrency=args.concurrency, rate=args.rate)
        print(f"predicting over {len(targets)} nodes at <= {args.rate:g}/s, 600 ms deadline; goal 0 failed")
        with loop:
            phase(loop, "warm-up", marks, lambda: time.sleep(3))

            def rollout() -> None:
                fleet.publish(MODEL, v2)
                converge(fleet, [2])

            phase(loop, "rollout v1→v2", marks, rollout)
            phase(loop, "rollback v2→v1", marks, lambda: rollback(fleet))
            phase(
                loop,
                "restart sidecars (SIGTERM)",
                marks,
                lambda: restart_sidecars(fleet, crash=False, nodes=args.restart_nodes),
            )
            phase(
                loop,
                "restart sidecars (SIGKILL)",
                marks,
                lambda: restart_sidecars(fleet, crash=True, nodes=args.restart_nodes),
            )
            phase(loop, "steady until enough calls", marks, lambda: loop.wait_total(args.calls, timeout=600))
            converge(fleet, [1], timeout=10)
            stats = loop.stop()
    finally:
        fleet.stop()
        finish(root, keep=args.keep)
    return stats, marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10_000, help="at least this many Predicts")
    parser.add_argument("--rate", type=float, default=250.0, help="calls per second, all nodes together")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--restart-nodes", type=int, default=1000, help="restart the sidecars of this many nodes")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.calls, args.restart_nodes = 2, 1_000, 1
    stats, marks = run(args)
    ratio = stats.failed / stats.total if stats.total else 1.0
    print(
        f"\navailability: {stats.failed} failed of {stats.total} Predicts ({ratio:.4%}): "
        f"{stats.control_plane_failed} by the control plane (goal 0), {stats.cold} cold first calls of a new "
        f"version over the deadline (no warm-up records); on {args.nodes} "
        f"nodes in {stats.elapsed:.0f}s ({stats.total / stats.elapsed:.0f}/s); latency p50 "
        f"{stats.percentile(0.5) * 1000:.1f} ms, p99 {stats.percentile(0.99) * 1000:.1f} ms, max "
        f"{max(stats.latencies) * 1000:.1f} ms (deadline 600 ms)"
    )
    print(
        f"  per node: {dict(stats.per_node)}; answered by version: "
        + str({h: dict(c) for h, c in stats.versions.items()})
    )
    if stats.failures:
        print(
            "  failures: " + "; ".join(f"{f.node}@{f.at:.1f}s {f.code}: {f.message[:160]}" for f in stats.failures[:20])
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "nodes": args.nodes,
                    "total": stats.total,
                    "failed": stats.failed,
                    "control_plane_failed": stats.control_plane_failed,
                    "cold_over_deadline": stats.cold,
                    "failed_ratio": ratio,
                    "phases": marks,
                    "p50_ms": stats.percentile(0.5) * 1000,
                    "p99_ms": stats.percentile(0.99) * 1000,
                    "per_node": dict(stats.per_node),
                    "versions": {h: {str(v): n for v, n in c.items()} for h, c in stats.versions.items()},
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if stats.control_plane_failed == 0 and stats.total >= args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
