"""bench/chaos: the local fleet under a search-like gRPC load while a seeded schedule injects faults.

For ``--minutes`` (default 10), one fault at a time, each healed after a bounded hold (faults.py): kill -9
of the puller, config_manager, model server and master (restarted after Swarm's restart delay, 10 s, by
the bench: the local fleet does not supervise), fake GCS killed and restarted, GCS answering 503 and
blackholed (a proxy), node-1's model volume (a tmpfs) full while a version is published, the last node
partitioned (its network namespace cut off), a corrupt version, a state-document edit (pin, unpin).
Meanwhile searches of 15-45 Predicts (600 ms deadline, long-lived channels) run over every node and a
watcher checks the invariants (invariants.py). Prints the tables, writes ``--json``; exit 1 if an
invariant broke. Needs root (tmpfs mount, ``ip netns``).

    .venv/bin/python bench/chaos/run.py                 # 10 minutes, 3 nodes, seed 13
    .venv/bin/python bench/chaos/run.py --smoke         # 2 nodes, every kind once, 1-2 s holds (~1.5 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos.faults import KINDS, MODEL, STATIC_MODEL, Event, Injector, schedule  # noqa: E402
from bench.chaos.fleet import Supervisor, chaos_fleet  # noqa: E402
from bench.chaos.invariants import Watcher  # noqa: E402
from bench.chaos.load import SearchLoad  # noqa: E402
from bench.chaos.report import build, render  # noqa: E402
from bench.chaos.versions import start_writer, wait_version  # noqa: E402
from bench.workdir import finish  # noqa: E402
from services.local_fleet.convergence import wait_available  # noqa: E402
from services.local_fleet.fleet import Node  # noqa: E402

logger = logging.getLogger("chaos")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="about a minute: 2 nodes, every fault kind once")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected")
    parser.add_argument(
        "--nodes", type=int, default=3, help="nodes (>= 2: node-1 has the small volume, the last a netns)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rate", type=float, default=3.0, help="searches per second (15-45 calls each)")
    parser.add_argument("--restart-delay", type=float, default=10.0, help="Swarm's restart_policy delay")
    parser.add_argument("--hold", type=float, nargs=2, default=(5.0, 20.0), help="fault held for [min, max] s")
    parser.add_argument("--gap", type=float, nargs=2, default=(2.0, 8.0), help="calm between faults [min, max] s")
    parser.add_argument("--converge-timeout", type=float, default=180.0, help="T: converged within this after chaos")
    parser.add_argument("--volume-mb", type=int, default=16, help="node-1's model volume (tmpfs) size")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's directory (logs) after the run")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.minutes, args.restart_delay = 2, 0.0, 1.0
        args.hold, args.gap, args.converge_timeout, args.rate = (1.0, 2.0), (0.3, 0.6), 90.0, 2.0
    if args.nodes < 2:
        parser.error("--nodes must be >= 2")
    return args


def converge(nodes: list[Node], wanted: dict[str, int], timeout: float) -> None:
    async def every_model() -> None:
        deadline = time.monotonic() + timeout
        for model, version in wanted.items():
            await wait_available(nodes, model, [version], timeout=max(1.0, deadline - time.monotonic()))

    asyncio.run(every_model())


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    models = work / "models"
    # Enough ranker versions for every event to publish one or two (about one event per 10 s at most).
    writer = start_writer(models, {STATIC_MODEL: 1, MODEL: 2 * len(KINDS) + int(args.minutes * 12)})
    try:
        return _run_fleet(args, work, models, writer)
    finally:
        writer.kill()
        writer.wait(timeout=30)


def _run_fleet(
    args: argparse.Namespace, work: Path, models: Path, writer: subprocess.Popen[bytes]
) -> dict[str, object]:
    logger.info("starting a fleet of %d nodes", args.nodes)
    with chaos_fleet(work / "fleet", nodes=args.nodes, volume_bytes=args.volume_mb << 20) as (fleet, rules, _):
        logger.info("fleet started; publishing v1")
        for model in (MODEL, STATIC_MODEL):
            fleet.publish(model, wait_version(models, model, 1, writer, timeout=300))
        converge(fleet.nodes, {MODEL: 1, STATIC_MODEL: 1}, timeout=180)
        logger.info("fleet of %d nodes serves %s and %s v1; chaos starts", len(fleet.nodes), MODEL, STATIC_MODEL)
        clock_zero = time.monotonic()
        watcher = Watcher(fleet.nodes, [MODEL, STATIC_MODEL]).start()
        supervisor = Supervisor(fleet, restart_delay=args.restart_delay, started=clock_zero).start()
        injector = Injector(
            fleet=fleet,
            rules=rules,
            supervisor=supervisor,
            watcher=watcher,
            models_dir=models,
            writer=writer,
            clock_zero=clock_zero,
            restart_delay=args.restart_delay,
        )
        targets = {n.hostname: n.grpc_target for n in fleet.nodes}
        load = SearchLoad(
            targets,
            [MODEL, STATIC_MODEL],
            rate=args.rate,
            clock_zero=clock_zero,
            seed=args.seed,
            corrupt=injector.corrupt,
        ).start()
        events: list[Event] = []
        converge_seconds: float | None = None
        try:
            time.sleep(2.0)
            plan = schedule(
                random.Random(args.seed),
                [n.hostname for n in fleet.nodes],
                hold=tuple(args.hold),
                gap=tuple(args.gap),
                # Smoke: the model server's restart (TensorFlow's start-up) overlaps the other faults.
                first=("kill model server",) if args.smoke else (),
            )
            # At least every kind once (the smoke run is exactly that), then until the time is up.
            while len(events) < len(KINDS) or injector.now() < args.minutes * 60:
                event = next(plan)
                injector.run(event)
                events.append(event)
                time.sleep(event.gap)
            chaos_seconds = injector.now()
            healed = time.monotonic()
            wanted = {MODEL: injector.good[MODEL], STATIC_MODEL: 1}
            try:
                converge(fleet.nodes, wanted, timeout=args.converge_timeout)
                converge_seconds = time.monotonic() - healed
            except TimeoutError as exc:
                logger.error("not converged: %s", exc)
            time.sleep(2.0)  # the load sees the converged fleet too
        finally:
            tally = load.stop()
            violations = watcher.stop()
            supervisor.stop()
        return build(
            args={k: v for k, v in vars(args).items() if k not in ("json", "keep")},
            tally=tally,
            windows=injector.windows,
            events=events,
            violations=violations,
            deaths=supervisor.deaths,
            converge_seconds=converge_seconds,
            converge_budget=args.converge_timeout,
            scans=watcher.scans,
            chaos_seconds=chaos_seconds,
            corrupt=sorted(injector.corrupt),
            recorded_failed=watcher.recorded_failed,
        )


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    try:
        report = run(args, work)
    finally:
        finish(work, keep=args.keep)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["held"] else 1


if __name__ == "__main__":
    sys.exit(main())
