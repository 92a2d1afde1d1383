"""bench/switch: latency around version switches, with and without generated warm-up, and a bad version between.

A local fleet serves a model whose first call after a load costs TensorFlow's graph optimisation
(``first_call_layers``), with golden requests uploaded through master's API once v1 serves
(``PUT /v1/golden/<model>``). A search-like load (bench/chaos/load.py: searches of 15-45 Predicts, 600 ms
deadline, one long-lived channel per node) runs on every node the whole time, through ONE run of:

1. steady state;
2. (a) v1 -> v2 with the pullers' generated warm-up off (``FLEET_GENERATED_WARMUP_REPEAT=0``);
3. (b) v3 published: it loads and answers NaN; every node must reject it (GOLDEN_CHECK_FAILED);
4. the pullers restarted with generated warm-up on (the setting is read at start);
5. (c) v2 -> v4 with generated warm-up;
(``--smoke`` and ``--no-cold`` leave out 2 and 4: generated warm-up is on from the start);
with calm periods between (the steady state). Prints p50/p99 per second from 5 s before to 10 s after
each node's switch (the new version AVAILABLE in the served model), the ratio to the steady p99, failed
calls by gRPC code and the versions that ever answered. Exit status 1 if the bad version answered a
production call or any call failed.

    .venv/bin/python bench/switch/run.py [--json F]      # 3 nodes, 20 s calm periods
    .venv/bin/python bench/switch/run.py --smoke         # 2 nodes, short calm periods, (b) and (c) only (tests)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.switch.client import LoadProcess  # noqa: E402
from bench.switch.figures import WINDOW, Phase, build, render  # noqa: E402
from bench.switch.watch import wait_rejected, warmup_records_replayed, watch_available  # noqa: E402
from bench.workdir import finish  # noqa: E402
from services.common.contracts.golden import golden_path  # noqa: E402
from services.local_fleet.convergence import predict_once, wait_available  # noqa: E402
from services.local_fleet.fleet import FleetOptions, LocalFleet, Node  # noqa: E402
from services.local_fleet.savedmodels import write_model  # noqa: E402

MODEL = "ranker"
BAD_VERSION = 3
VERSIONS = (1, 2, BAD_VERSION, 4)
WARMUP_REPEAT = 10  # the puller's default FLEET_GENERATED_WARMUP_REPEAT


def write_versions(pool: ProcessPoolExecutor, directory: Path, layers: int) -> dict[int, Future[Path]]:
    """Every version, written by a child process (TensorFlow never runs in the bench's own process)."""
    return {
        v: pool.submit(write_model, directory, v, first_call_layers=layers, nan_answers=v == BAD_VERSION)
        for v in VERSIONS
    }


def publish_golden(fleet: LocalFleet) -> None:
    """The golden set, uploaded through master's API as an ML engineer does (validated against v1)."""
    golden = {
        "model": MODEL,
        "requests": [
            {
                "name": "unit",
                "rest": {"instances": [[1.0]]},
                "checks": {"outputs": {"y": {"dtype": "DT_FLOAT", "shape": [1, 1], "min": 0.5, "max": 1e6}}},
            }
        ],
    }
    with fleet.admin() as admin:
        answer = admin.put(f"/v1/golden/{MODEL}", json=golden, headers={"If-Match": "0"})
    if answer.status_code != 200:
        raise RuntimeError(f"master refused the golden set: {answer.status_code} {answer.text}")
    # Every node's copy first: a version published before a node mirrored the set would take traffic unchecked.
    copies = [golden_path(node.model_dir, MODEL) for node in fleet.nodes]
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in copies):
        if time.monotonic() > deadline:
            raise RuntimeError(f"golden set not mirrored to every node within 60 s: {copies}")
        time.sleep(0.2)


async def prime(nodes: Sequence[Node]) -> None:
    """v1's first calls on every node, one at a time, before the load: the steady state starts warm."""
    for node in nodes:
        for _ in range(3):
            await predict_once(node, MODEL)


def set_generated_warmup(fleet: LocalFleet, repeat: int) -> None:
    """Restart every puller with ``FLEET_GENERATED_WARMUP_REPEAT=repeat`` (read once, at start), all at once."""
    for node in fleet.nodes:
        node.puller.stop()
    for node in fleet.nodes:
        node.puller.env = {**node.puller.env, "FLEET_GENERATED_WARMUP_REPEAT": str(repeat)}
        node.puller.start()
    for node in fleet.nodes:
        node.puller.wait_healthy(60)


class Run:
    """The sequence, timed on the load's clock."""

    def __init__(self, fleet: LocalFleet, versions: dict[int, Path], args: argparse.Namespace) -> None:
        self.fleet, self.versions, self.args = fleet, versions, args
        self.clock_zero = time.monotonic()
        self.calm: list[tuple[float, float]] = []
        self.phases: list[Phase] = []

    def now(self) -> float:
        return time.monotonic() - self.clock_zero

    def hold_calm(self) -> None:
        start = self.now()
        time.sleep(self.args.calm)
        self.calm.append((start, self.now()))

    def switch(self, name: str, version: int, *, warmup: bool) -> None:
        phase = Phase(name, version, warmup, published=self.now())
        self.phases.append(phase)
        print(f"{name}: publishing v{version}", flush=True)
        self.fleet.publish(MODEL, self.versions[version])
        nodes = self.fleet.nodes
        phase.available = asyncio.run(
            watch_available(nodes, MODEL, version=version, clock_zero=self.clock_zero, timeout=self.args.timeout)
        )
        asyncio.run(wait_available(nodes, MODEL, [version], timeout=self.args.timeout))  # the old one unloaded
        time.sleep(max(0.0, max(phase.available.values()) + self.args.after - self.now()))
        phase.warmup_records = {n.hostname: warmup_records_replayed(n, MODEL, version=version) for n in nodes}
        phase.ended = self.now()

    def reject(self, name: str, version: int, serving: int) -> None:
        phase = Phase(name, version, warmup=self.args.no_cold, published=self.now())
        self.phases.append(phase)
        print(f"{name}: publishing v{version} (answers NaN)", flush=True)
        self.fleet.publish(MODEL, self.versions[version])
        phase.rejected = wait_rejected(self.fleet.nodes, MODEL, version=version, timeout=self.args.timeout)
        asyncio.run(wait_available(self.fleet.nodes, MODEL, [serving], timeout=10))
        phase.ended = self.now()

    def sequence(self) -> None:
        self.hold_calm()
        serving = 1
        if not self.args.no_cold:
            self.switch("(a) switch without generated warm-up", 2, warmup=False)
            self.hold_calm()
            serving = 2
        self.reject("(b) bad version", BAD_VERSION, serving=serving)
        if not self.args.no_cold:
            print(f"restarting the pullers with FLEET_GENERATED_WARMUP_REPEAT={WARMUP_REPEAT}", flush=True)
            set_generated_warmup(self.fleet, WARMUP_REPEAT)
        self.hold_calm()
        self.switch("(c) switch with generated warm-up", 4, warmup=True)
        self.hold_calm()


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    load_before = os.getloadavg()  # the machine is shared: its load is part of the figures
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        writing = write_versions(pool, work / "models", args.layers)  # while the fleet starts
        report = run_fleet(args, work, pool, writing)
    report["load_average"] = {"start": load_before, "end": os.getloadavg()}
    return report


def run_fleet(
    args: argparse.Namespace, work: Path, pool: ProcessPoolExecutor, writing: dict[int, Future[Path]]
) -> dict[str, object]:
    # Generated warm-up off until (a) is done; without (a) it is on from the start (no puller restart).
    repeat = WARMUP_REPEAT if args.no_cold else 0
    options = FleetOptions(
        nodes=args.nodes,
        sync_interval=2.0,
        quiet_period=1.0,
        extra_env={"FLEET_GENERATED_WARMUP_REPEAT": str(repeat)},
    )
    fleet = LocalFleet(work / "fleet", options)
    try:
        print(f"starting fleet: {args.nodes} nodes", flush=True)
        fleet.start()
        versions = {v: job.result(timeout=args.timeout) for v, job in writing.items()}
        pool.shutdown()  # TensorFlow's memory goes before the measurement starts
        fleet.publish(MODEL, versions[1])
        asyncio.run(wait_available(fleet.nodes, MODEL, [1], timeout=args.timeout))
        publish_golden(fleet)
        asyncio.run(prime(fleet.nodes))
        sequence = Run(fleet, versions, args)
        targets = {n.hostname: n.grpc_target for n in fleet.nodes}
        load = LoadProcess(
            targets,
            [MODEL],
            rate=args.rate,
            clock_zero=sequence.clock_zero,
            seed=args.seed,
            corrupt={(MODEL, BAD_VERSION)},
        ).start()
        try:
            sequence.sequence()
        finally:
            tally = load.stop()
    finally:
        fleet.stop()
    figures_args = {k: v for k, v in vars(args).items() if k not in ("json", "keep", "calls_out")}
    report = build(
        args={**figures_args, "bad_version": BAD_VERSION},
        calls=tally.calls,
        phases=sequence.phases,
        calm=sequence.calm,
        stalls=tally.stalls,
    )
    if args.calls_out:
        args.calls_out.write_text(json.dumps([dataclasses.asdict(c) for c in tally.calls]) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="2 nodes, short calm periods, no (a) (tests)")
    parser.add_argument("--no-cold", action="store_true", help="leave out (a), the switch without warm-up")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2, help="first_call_layers of every version")
    parser.add_argument("--calm", type=float, default=20.0, help="seconds of each calm period (steady state)")
    parser.add_argument(
        "--after", type=float, default=WINDOW[1], help="seconds the run goes on after the last node switched"
    )
    parser.add_argument("--rate", type=float, default=3.0, help="searches per second (15-45 calls each)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each wait for the fleet")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--calls-out", type=Path, help="write every call (start, latency, node, code, version) here")
    args = parser.parse_args()
    if args.smoke:
        # Smoke: no hidden layers (the first call still costs TensorFlow's function set-up, ~20 ms), and no
        # switch without warm-up: its cold first calls miss the deadline on a loaded machine by design.
        args.nodes, args.calm, args.layers, args.after, args.no_cold = 2, 3.0, 0, 3.0, True
    work = Path(tempfile.mkdtemp(prefix="bench-switch-"))
    try:
        report = run(args, work)
    finally:
        finish(work, keep=args.keep)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    fleet_failed = report["failed"] - report["failed_while_client_stalled"]
    return 0 if fleet_failed == 0 and report["bad_version_answered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
