"""bench/rollout: progressive rollout on the local fleet under a search-like load (issue 16).

Starts a local fleet (``services.local_fleet``), publishes v1, puts the model under a rollout policy, and
runs the search-like Predict loop (600 ms deadlines, every node) for the whole run. Then:

- **good version** (v2): seconds from its last object uploaded to AVAILABLE on every node and the rollout
  ``done``, against waves x bake + transfer (transfer measured in the same run: downloading the version
  from the same emulator);
- **bad version** (v3, fails every real call with INVALID_ARGUMENT; loads and passes its warm-up records,
  so only traffic shows it):
  which nodes ever had it AVAILABLE or answered with it (must be the first wave only), seconds from the
  failed gate (the rollout turning ``reverted``) to the first wave's nodes serving v2 alone again, against
  the sync interval, and failed calls on the nodes outside the first wave (must be 0).

Every node's model server is watched directly (GetModelStatus every 250 ms), independent of master.

    .venv/bin/python bench/rollout/run.py            # 5 nodes, waves 1/50%/100%, bake 10 s, sync 5 s
    .venv/bin/python bench/rollout/run.py --smoke    # 2 nodes, waves 1/100%, bake 2 s, sync 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.workdir import finish  # noqa: E402
from services.common.errors import TFServingError  # noqa: E402
from services.common.tfs import TFServingClient, VersionState  # noqa: E402
from services.local_fleet.convergence import predict_once, wait_available  # noqa: E402
from services.local_fleet.fleet import FleetOptions, LocalFleet  # noqa: E402
from tests.support.predict_loop import predicting  # noqa: E402
from tests.support.savedmodels import write_model  # noqa: E402

MODEL = "ranker"


def rollout_view(fleet: LocalFleet) -> dict[str, Any] | None:
    with fleet.reader() as client:
        response = client.get(f"/v1/rollouts/{MODEL}")
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def set_policy(fleet: LocalFleet, policy: dict[str, Any]) -> None:
    with fleet.admin() as client:
        etag = client.get(f"/v1/models/{MODEL}").headers["etag"]
        client.put(f"/v1/models/{MODEL}", json={"rollout": policy}, headers={"If-Match": etag}).raise_for_status()


def measure_transfer(fleet: LocalFleet, version: int) -> float:
    began = time.monotonic()
    for blob in fleet.bucket().list_blobs(prefix=f"{fleet.options.prefix}/{MODEL}/{version}/"):
        blob.download_as_bytes()
    return time.monotonic() - began


class Watch:
    """Samples every node's AVAILABLE versions and master's rollout view until ``until`` says stop."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.fleet = fleet
        self.available: dict[str, list[int]] = {}
        self.ever: dict[int, set[str]] = {}
        self.first_seen: dict[tuple[str, int], float] = {}
        self.states: list[tuple[float, str, int]] = []
        self.view: dict[str, Any] | None = None

    async def run(self, until: Any, *, timeout: float) -> None:
        clients = {n.hostname: TFServingClient(n.grpc_target) for n in self.fleet.nodes}
        deadline = time.monotonic() + timeout
        try:
            while not until(self):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"not within {timeout}s: available {self.available}, states {self.states[-3:]}, "
                        f"reason {(self.view or {}).get('reason')}"
                    )
                for host, client in clients.items():
                    try:
                        statuses = await client.get_model_status(MODEL, timeout=1.0)
                    except TFServingError:
                        continue
                    versions = sorted(s.version for s in statuses if s.state == VersionState.AVAILABLE)
                    self.available[host] = versions
                    for v in versions:
                        self.ever.setdefault(v, set()).add(host)
                        self.first_seen.setdefault((host, v), time.monotonic())
                view = await asyncio.to_thread(rollout_view, self.fleet)
                self.view = view or self.view
                if view is not None and (not self.states or self.states[-1][1:] != (view["state"], view["version"])):
                    self.states.append((time.monotonic(), view["state"], view["version"]))
                await asyncio.sleep(0.25)
        finally:
            for client in clients.values():
                await client.close()

    def state_at(self, state: str, version: int) -> float | None:
        return next((t for t, s, v in self.states if s == state and v == version), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    models = root / "models"
    options = FleetOptions(
        nodes=args.nodes,
        sync_interval=args.interval,
        quiet_period=1.0,
        master_poll_interval=1.0,
        log_format="json",
        extra_env={"FLEET_BUCKET_CACHE_SECONDS": "0.5"},
    )
    fleet = LocalFleet(root / "fleet", options)
    policy = {"waves": args.waves, "bake_seconds": args.bake, "min_requests": 20}
    try:
        print(f"starting fleet: {args.nodes} nodes, sync interval {args.interval}s, rollout {policy}")
        fleet.start()
        fleet.publish(MODEL, write_model(models, 1))
        asyncio.run(wait_available(fleet.nodes, MODEL, [1], timeout=120))
        set_policy(fleet, policy)
        # Warm-up records (x = 0, 1), as production versions ship, so the first real calls are not cold;
        # v3 passes its warm-up and fails every real call (x = 2).
        good_dir = write_model(models, 2, warmup_requests=2)
        bad_dir = write_model(models, 3, warmup_requests=2, fail_above=1.5)
        for node in fleet.nodes:  # a first call pays TensorFlow's first-call cost: not the rollout's doing
            asyncio.run(predict_once(node, MODEL))
        targets = {n.hostname: n.grpc_target for n in fleet.nodes}
        with predicting(targets, MODEL, rate=args.rate, x=2.0) as loop:
            good = Watch(fleet)
            fleet.publish(MODEL, good_dir)
            uploaded = time.monotonic()
            asyncio.run(
                good.run(
                    lambda w: (
                        w.state_at("done", 2) is not None
                        and all(v == [2] for v in w.available.values())
                        and len(w.available) == args.nodes
                    ),
                    timeout=args.bake * 10 + 180,
                )
            )
            good_seconds = max(good.first_seen[(n.hostname, 2)] for n in fleet.nodes) - uploaded
            done_seconds = (good.state_at("done", 2) or 0) - uploaded
            view = rollout_view(fleet) or {}
            waves = [w["nodes"] for w in view.get("waves", [])]
            before_bad = loop.snapshot()
            bad = Watch(fleet)
            fleet.publish(MODEL, bad_dir)

            def reverted_and_back(w: Watch) -> bool:
                if w.state_at("reverted", 3) is None or w.view is None:
                    return False
                return all(w.available.get(h) == [2] for h in w.view["waves"][0]["nodes"])

            asyncio.run(bad.run(reverted_and_back, timeout=180))
            back_at = time.monotonic()
            failed_gate = bad.state_at("reverted", 3) or back_at
            reverted_view = bad.view or {}
            first_wave = set(reverted_view["waves"][0]["nodes"])
            stats = loop.snapshot()
        transfer = measure_transfer(fleet, 2)
    finally:
        fleet.stop()
        finish(root, keep=args.keep)
    outside = sorted(set(targets) - first_wave)
    served_bad = sorted(h for h, c in stats.versions.items() if c.get(3))
    budget = len(waves) * args.bake + transfer
    revert_seconds = back_at - failed_gate
    return {
        "nodes": args.nodes,
        "interval": args.interval,
        "policy": policy,
        "waves": waves,
        "good": {
            "all_nodes_seconds": round(good_seconds, 2),
            "done_seconds": round(done_seconds, 2),
            "budget_seconds": round(budget, 2),
            "ratio": round(good_seconds / budget, 2),
            "done_ratio": round(done_seconds / budget, 2),
            "transfer_seconds": round(transfer, 3),
            "failed_calls": before_bad.control_plane_failed,
        },
        "bad": {
            "first_wave": sorted(first_wave),
            "available_on": sorted(bad.ever.get(3, set())),
            "answered_on": served_bad,
            "reason": reverted_view.get("reason"),
            "revert_seconds": round(revert_seconds, 2),
            "revert_ratio_to_interval": round(revert_seconds / args.interval, 2),
            "failed_calls_outside_first_wave": sum(stats.failed_per_node[h] for h in outside),
            "failed_calls_first_wave": sum(stats.failed_per_node[h] for h in first_wave),
        },
        "calls": stats.total,
        "measured_at": datetime.now().isoformat(timespec="seconds"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--interval", type=float, default=5.0, help="FLEET_SYNC_INTERVAL_SECONDS")
    parser.add_argument("--bake", type=float, default=10.0, help="bake seconds per wave")
    parser.add_argument("--waves", default="1,50%,100%", help="wave sizes, comma-separated")
    parser.add_argument("--rate", type=float, default=100.0, help="Predicts per second over all nodes")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.interval, args.bake, args.waves, args.rate = 2, 2.0, 2.0, "1,100%", 40.0
    args.waves = [int(w) if w.isdigit() else w for w in args.waves.split(",")]
    figures = run(args)
    good, bad = figures["good"], figures["bad"]
    print(f"\nrollout on {figures['nodes']} nodes, waves {figures['waves']}, bake {args.bake:g}s:")
    print(
        f"  good v2: AVAILABLE on all nodes {good['all_nodes_seconds']}s after upload (rollout done at "
        f"{good['done_seconds']}s); waves x bake + transfer = {good['budget_seconds']}s, ratio {good['ratio']} "
        f"(done: {good['done_ratio']}); "
        f"{good['failed_calls']} failed calls"
    )
    print(
        f"  bad v3: AVAILABLE on {bad['available_on']}, answered on {bad['answered_on']} (first wave "
        f"{bad['first_wave']}); reverted: {bad['reason']}"
    )
    print(
        f"  revert: first wave back on v2 alone {bad['revert_seconds']}s after the failed gate "
        f"(sync interval {figures['interval']:g}s, ratio {bad['revert_ratio_to_interval']}); failed calls outside "
        f"the first wave: {bad['failed_calls_outside_first_wave']}, in it: {bad['failed_calls_first_wave']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    outside = set(bad["answered_on"]) - set(bad["first_wave"])
    broken = good["failed_calls"] or bad["failed_calls_outside_first_wave"] or outside or not bad["reason"]
    if broken:
        print("  FAILED: the bad version served beyond the first wave, was not reverted, or calls failed")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
