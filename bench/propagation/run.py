"""bench/propagation: seconds from the last object of a new version uploaded to AVAILABLE on every node.

Runs a local fleet (``services.local_fleet``), publishes versions 2, 3, ... of a real SavedModel the way
an ML engineer does, and watches every node's model server (GetModelStatus every 50 ms) for the version
to turn AVAILABLE. The clock starts when the upload call of the version's *last* object returns (the
moment the bucket lists it).

Two completeness modes are measured, each on its own fleet:
- ``quiet``: no marker; a version is complete once none of its objects changed for the quiet period,
  so the quiet period is part of the expected delay: budget = interval + quiet + transfer + 1 s.
- ``marker``: ``FLEET_COMPLETE_MARKER=_COMPLETE``, uploaded last; complete at once: budget = interval +
  transfer + 1 s (issue 8's goal, literally).

``transfer`` is measured in the same run: the time this process takes to download the version's objects
from the same emulator. Prints absolute seconds and ratios against the budget.

    .venv/bin/python bench/propagation/run.py             # 3 nodes, sync interval 5 s, 5 versions per mode
    .venv/bin/python bench/propagation/run.py --smoke     # 2 nodes, interval 2 s, 2 versions, quiet mode
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.common.errors import TFServingError  # noqa: E402
from services.common.tfs import TFServingClient, VersionState  # noqa: E402
from services.local_fleet.fleet import FleetOptions, LocalFleet  # noqa: E402
from tests.support.savedmodels import write_model  # noqa: E402

MODEL = "propagation"
MARKER = "_COMPLETE"


def upload_version(fleet: LocalFleet, version_dir: Path, *, marker: bool) -> float:
    """Upload the version (graph last, then the marker if any); returns when the last upload returned."""
    dest = f"{fleet.options.prefix}/{MODEL}/{version_dir.name}/"
    bucket = fleet.bucket()
    files = sorted((p for p in version_dir.rglob("*") if p.is_file()), key=lambda p: (p.name == "saved_model.pb", p))
    for path in files:
        bucket.blob(dest + path.relative_to(version_dir).as_posix()).upload_from_filename(str(path))
    if marker:
        bucket.blob(dest + MARKER).upload_from_string(b"")
    return time.monotonic()


def measure_transfer(fleet: LocalFleet, version: int) -> float:
    """Seconds to download every object of ``version`` from the emulator (one client, sequential)."""
    bucket = fleet.bucket()
    began = time.monotonic()
    for blob in bucket.list_blobs(prefix=f"{fleet.options.prefix}/{MODEL}/{version}/"):
        blob.download_as_bytes()
    return time.monotonic() - began


async def watch_available(fleet: LocalFleet, version: int, *, started: float, timeout: float) -> dict[str, float]:
    """Per node: seconds after ``started`` when ``version`` was first seen AVAILABLE."""
    clients = {n.hostname: TFServingClient(n.grpc_target) for n in fleet.nodes}
    seen: dict[str, float] = {}
    try:
        while len(seen) < len(clients):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"version {version} not AVAILABLE everywhere after {timeout}s: {seen}")
            for host, client in clients.items():
                if host in seen:
                    continue
                try:
                    statuses = await client.get_model_status(MODEL, timeout=1.0)
                except TFServingError:
                    continue
                if any(s.version == version and s.state == VersionState.AVAILABLE for s in statuses):
                    seen[host] = time.monotonic() - started
            await asyncio.sleep(0.05)
    finally:
        for client in clients.values():
            await client.close()
    return seen


def run_mode(mode: str, args: argparse.Namespace, models: Path) -> dict[str, Any]:
    """One fleet, ``args.versions`` rollouts; returns the figures of this mode."""
    marker = mode == "marker"
    if marker:
        os.environ["FLEET_COMPLETE_MARKER"] = MARKER  # inherited by every fleet process
    else:
        os.environ.pop("FLEET_COMPLETE_MARKER", None)
    root = Path(tempfile.mkdtemp(prefix=f"bench-propagation-{mode}-"))
    options = FleetOptions(nodes=args.nodes, sync_interval=args.interval, quiet_period=args.quiet, log_format="json")
    fleet = LocalFleet(root / "fleet", options)
    rounds: list[dict[str, Any]] = []
    try:
        print(f"[{mode}] starting fleet: {args.nodes} nodes, sync interval {args.interval}s, quiet {args.quiet}s")
        fleet.start()
        upload_version(fleet, models / "1", marker=marker)
        asyncio.run(watch_available(fleet, 1, started=time.monotonic(), timeout=120))
        for version in range(2, 2 + args.versions):
            # Start at a random phase of the nodes' sync loops, as a real upload would.
            time.sleep(args.interval * ((version * 0.37) % 1.0))
            started = upload_version(fleet, models / str(version), marker=marker)
            per_node = asyncio.run(watch_available(fleet, version, started=started, timeout=args.interval * 10 + 60))
            transfer = measure_transfer(fleet, version)
            budget = args.interval + (0.0 if marker else args.quiet) + transfer + 1.0
            slowest = max(per_node.values())
            rounds.append(
                {"version": version, "per_node": per_node, "all_nodes": slowest, "transfer": transfer, "budget": budget}
            )
            nodes = " ".join(f"{h}={s:.2f}s" for h, s in sorted(per_node.items()))
            print(
                f"[{mode}] v{version}: AVAILABLE on all nodes after {slowest:.2f}s "
                f"(budget {budget:.2f}s, ratio {slowest / budget:.2f}; transfer {transfer:.3f}s) {nodes}"
            )
    finally:
        fleet.stop()
        if args.keep:
            print(f"kept {root} (logs in {root / 'fleet' / 'logs'})")
        else:
            shutil.rmtree(root, ignore_errors=True)
        os.environ.pop("FLEET_COMPLETE_MARKER", None)
    alls = [r["all_nodes"] for r in rounds]
    budgets = [r["budget"] for r in rounds]
    return {
        "mode": mode,
        "nodes": args.nodes,
        "interval": args.interval,
        "quiet_period": 0.0 if marker else args.quiet,
        "rounds": rounds,
        "mean_seconds": statistics.fmean(alls),
        "max_seconds": max(alls),
        "max_ratio": max(a / b for a, b in zip(alls, budgets, strict=True)),
        "goal_met": all(a <= b for a, b in zip(alls, budgets, strict=True)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="FLEET_SYNC_INTERVAL_SECONDS")
    parser.add_argument("--quiet", type=float, default=1.0, help="FLEET_QUIET_PERIOD_SECONDS (quiet mode)")
    parser.add_argument("--versions", type=int, default=5, help="rollouts measured per mode")
    parser.add_argument("--modes", default="quiet,marker")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.interval, args.versions, args.modes = 2, 2.0, 2, "quiet"
    modes = [m for m in args.modes.split(",") if m]
    models = Path(tempfile.mkdtemp(prefix="bench-propagation-models-"))
    for version in range(1, 2 + args.versions):
        write_model(models, version)
    try:
        results = [run_mode(mode, args, models) for mode in modes]
    finally:
        shutil.rmtree(models, ignore_errors=True)
    print("\npropagation (last object uploaded → AVAILABLE on all nodes):")
    for r in results:
        print(
            f"  {r['mode']:>6}: mean {r['mean_seconds']:.2f}s, max {r['max_seconds']:.2f}s over {len(r['rounds'])} "
            f"versions on {r['nodes']} nodes; sync interval {r['interval']:g}s, quiet {r['quiet_period']:g}s; "
            f"mean/interval {r['mean_seconds'] / r['interval']:.2f}; max ratio to budget {r['max_ratio']:.2f} "
            f"→ goal {'met' if r['goal_met'] else 'MISSED'}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
