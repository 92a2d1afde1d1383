"""bench/propagation: seconds from the last object of a new version uploaded to AVAILABLE on every node.

Runs a local fleet (``services.local_fleet``), publishes versions 2, 3, ... of a real SavedModel the way
an ML engineer does, and watches every node's model server (GetModelStatus every 50 ms) for the version
to turn AVAILABLE. The clock starts when the upload call of the version's *last* object returns (the
moment the bucket lists it).

Three modes are measured, each on its own fleet:
- ``quiet``: polling, no marker; a version is complete once none of its objects changed for the quiet
  period, so the quiet period is part of the expected delay: budget = interval + quiet + transfer + 1 s.
- ``marker``: polling, ``FLEET_COMPLETE_MARKER=_COMPLETE``, uploaded last; complete at once: budget =
  interval + transfer + 1 s (issue 8's goal, literally).
- ``events``: bucket notifications (Pub/Sub emulator), quiet period, same sync interval. Rounds with
  events (goal: 3 s), then a pin through master's API (goal: applied on every node within 3 s: the
  pinned version is the only one AVAILABLE), then the emulator is killed and the same fleet, fallen
  back to polling, is measured again against the polling budget: both modes in one run.

``transfer`` is measured in the same run: the time this process takes to download the version's objects
from the same emulator. Prints absolute seconds and ratios against the budget.

    .venv/bin/python bench/propagation/run.py             # 3 nodes, sync interval 5 s, 5 versions per mode
    .venv/bin/python bench/propagation/run.py --smoke     # 2 nodes, interval 2 s, events mode: 1 round each
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.workdir import finish  # noqa: E402
from services.common.errors import TFServingError  # noqa: E402
from services.common.tfs import TFServingClient, VersionState  # noqa: E402
from services.local_fleet.fleet import FleetOptions, LocalFleet  # noqa: E402
from tests.support.savedmodels import write_model  # noqa: E402

MODEL = "propagation"
MARKER = "_COMPLETE"
EVENTS_GOAL_SECONDS = 3.0


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
    return await watch_nodes(fleet, lambda available: version in available, started=started, timeout=timeout)


async def watch_nodes(
    fleet: LocalFleet, done: Callable[[set[int]], bool], *, started: float, timeout: float
) -> dict[str, float]:
    """Per node: seconds after ``started`` when its AVAILABLE versions first satisfied ``done``."""
    clients = {n.hostname: TFServingClient(n.grpc_target) for n in fleet.nodes}
    seen: dict[str, float] = {}
    try:
        while len(seen) < len(clients):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not done on every node after {timeout}s: {seen}")
            for host, client in clients.items():
                if host in seen:
                    continue
                try:
                    statuses = await client.get_model_status(MODEL, timeout=1.0)
                except TFServingError:
                    continue
                if done({s.version for s in statuses if s.state == VersionState.AVAILABLE}):
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
        finish(root, keep=args.keep)
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


def set_pin(fleet: LocalFleet, pinned: list[int] | None) -> float:
    """PUT the model's overrides through master (pinned, or none); returns when master answered."""
    with fleet.admin(timeout=30) as admin:
        etag = admin.get(f"/v1/models/{MODEL}").headers["etag"]
        body = {"pinned": pinned} if pinned else {}
        admin.put(f"/v1/models/{MODEL}", json=body, headers={"If-Match": etag}).raise_for_status()
    return time.monotonic()


def wait_for_mode(fleet: LocalFleet, mode: str, timeout: float = 60.0) -> None:
    """Until every puller's metrics say ``mode`` (events / fallback)."""
    deadline = time.monotonic() + timeout
    line = f'modelfleet_puller_sync_mode{{mode="{mode}"}} 1.0'
    with httpx.Client(timeout=2, trust_env=False) as client:
        for node in fleet.nodes:
            while line not in client.get(f"http://127.0.0.1:{node.puller_port}/metrics").text:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.hostname}'s puller not in {mode} mode after {timeout}s")
                time.sleep(0.1)


def rollout(fleet: LocalFleet, models: Path, version: int, *, mode: str, budget_extra: float) -> dict[str, Any]:
    started = upload_version(fleet, models / str(version), marker=False)
    per_node = asyncio.run(watch_available(fleet, version, started=started, timeout=120))
    transfer = measure_transfer(fleet, version)
    slowest = max(per_node.values())
    budget = EVENTS_GOAL_SECONDS if mode == "events" else budget_extra + transfer + 1.0
    nodes = " ".join(f"{h}={s:.2f}s" for h, s in sorted(per_node.items()))
    print(f"[events] v{version} ({mode}): AVAILABLE on all nodes after {slowest:.2f}s (budget {budget:.2f}s) {nodes}")
    return {"version": version, "mode": mode, "per_node": per_node, "all_nodes": slowest, "budget": budget}


def run_events(args: argparse.Namespace, models: Path) -> dict[str, Any]:
    """One fleet with events: rollouts, a pin, then (emulator killed) rollouts by polling."""
    root = Path(tempfile.mkdtemp(prefix="bench-propagation-events-"))
    options = FleetOptions(
        nodes=args.nodes, sync_interval=args.interval, quiet_period=args.quiet, log_format="json", events=True
    )
    fleet = LocalFleet(root / "fleet", options)
    rounds: list[dict[str, Any]] = []
    pin: dict[str, Any] = {}
    try:
        print(f"[events] starting fleet: {args.nodes} nodes, sync interval {args.interval}s, quiet {args.quiet}s")
        fleet.start()
        wait_for_mode(fleet, "events")
        upload_version(fleet, models / "1", marker=False)
        asyncio.run(watch_available(fleet, 1, started=time.monotonic(), timeout=120))
        versions = iter(range(2, 2 + 2 * args.versions))
        for _ in range(args.versions):
            time.sleep(args.interval * 0.37)  # not in step with the (long) reconcile
            rounds.append(rollout(fleet, models, next(versions), mode="events", budget_extra=0))
        latest = rounds[-1]["version"]
        # From a settled fleet (the previous version unloaded everywhere), not mid-rollout.
        asyncio.run(watch_nodes(fleet, lambda a: a == {latest}, started=time.monotonic(), timeout=60))
        time.sleep(1.0)
        started = set_pin(fleet, [latest - 1])
        per_node = asyncio.run(watch_nodes(fleet, lambda a: a == {latest - 1}, started=started, timeout=120))
        pin = {"version": latest - 1, "per_node": per_node, "all_nodes": max(per_node.values())}
        print(f"[events] pin v{latest - 1}: applied on all nodes after {pin['all_nodes']:.2f}s")
        set_pin(fleet, None)
        asyncio.run(watch_available(fleet, latest, started=time.monotonic(), timeout=120))
        assert fleet.pubsub is not None
        fleet.pubsub.stop()
        wait_for_mode(fleet, "fallback")
        for version in versions:
            time.sleep(args.interval * ((version * 0.37) % 1.0))
            rounds.append(rollout(fleet, models, version, mode="fallback", budget_extra=args.interval + args.quiet))
    finally:
        fleet.stop()
        finish(root, keep=args.keep)
    by_mode = {m: [r["all_nodes"] for r in rounds if r["mode"] == m] for m in ("events", "fallback")}
    return {
        "mode": "events",
        "nodes": args.nodes,
        "interval": args.interval,
        "quiet_period": args.quiet,
        "rounds": rounds,
        "pin": pin,
        "mean_seconds": statistics.fmean(by_mode["events"]),
        "max_seconds": max(by_mode["events"]),
        "fallback_mean_seconds": statistics.fmean(by_mode["fallback"]),
        "max_ratio": max(r["all_nodes"] / r["budget"] for r in rounds),
        "goal_met": all(r["all_nodes"] <= r["budget"] for r in rounds) and pin["all_nodes"] <= EVENTS_GOAL_SECONDS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="FLEET_SYNC_INTERVAL_SECONDS")
    parser.add_argument("--quiet", type=float, default=1.0, help="FLEET_QUIET_PERIOD_SECONDS (quiet mode)")
    parser.add_argument("--versions", type=int, default=5, help="rollouts measured per mode")
    parser.add_argument("--modes", default="quiet,marker,events")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.interval, args.versions, args.modes = 2, 2.0, 1, "events"
    modes = [m for m in args.modes.split(",") if m]
    models = Path(tempfile.mkdtemp(prefix="bench-propagation-models-"))
    for version in range(1, 2 + 2 * args.versions):
        write_model(models, version)
    try:
        results = [run_events(args, models) if mode == "events" else run_mode(mode, args, models) for mode in modes]
    finally:
        shutil.rmtree(models, ignore_errors=True)
    print("\npropagation (last object uploaded → AVAILABLE on all nodes):")
    for r in results:
        if r["mode"] == "events":
            print(
                f"  events: mean {r['mean_seconds']:.2f}s, max {r['max_seconds']:.2f}s "
                f"(goal {EVENTS_GOAL_SECONDS:g}s); "
                f"pin applied everywhere in {r['pin']['all_nodes']:.2f}s; same fleet fallen back to polling: mean "
                f"{r['fallback_mean_seconds']:.2f}s (interval {r['interval']:g}s); events/polling "
                f"{r['mean_seconds'] / r['fallback_mean_seconds']:.2f} → goal {'met' if r['goal_met'] else 'MISSED'}"
            )
            continue
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
