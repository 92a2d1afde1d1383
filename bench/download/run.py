"""bench/download: the puller's download engine against the tools people use, same emulator, same run.

Three sets, each a SavedModel-shaped version ``<set>/m/1/`` in one fake-gcs-server:
- ``one-big``: one 1 GiB object;
- ``savedmodel``: 8 MB saved_model.pb + 4 x 256 MiB variable shards (~1.08 GB);
- ``many-small``: 2,000 x 100 KB objects.

Contestants (each in its own process; peak RSS is summed over its process tree, sampled every 20 ms):
- ``puller``: one real sync pass (list, ranged parallel reads, crc32c verified, fsync, one rename);
- ``rclone-tuned`` (``--ignore-checksum --transfers 16 --multi-thread-streams 8``), ``rclone-tuned+sync``
  (the same followed by ``sync``: equal durability), ``rclone-defaults``;
- ``gcloud-cp`` (``gcloud storage cp -r``), ``gcs-plain`` (google-cloud-storage download_to_filename
  per object, sequential).

And the machine limit, in the same run: the same files (names and sizes) written to the same disk with
no network at all and made durable per file (``disk_limit.py``): ``disk-dd`` as ``dd bs=8M
conv=fdatasync`` does it (page cache, then fdatasync), ``disk-dd-direct`` as ``dd oflag=direct
conv=fdatasync`` (O_DIRECT for files >= 8 MiB). The faster of the two is the machine limit; the puller's
ratio to it is printed (goal >= 0.85x on the two large sets). ``net-only`` reads the same objects with the
puller's reader and writes nothing: the network path's limit with the emulator on the same cores.

Missing peers (no rclone / gcloud on PATH) are reported and skipped. Install rclone with
``apt-get install -y rclone``.

    .venv/bin/python bench/download/run.py            # full sizes (needs ~2.5 GB RAM for the emulator, ~1.2 GB disk)
    .venv/bin/python bench/download/run.py --smoke    # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.download.emulator import PreloadedEmulator  # noqa: E402
from bench.download.rss import run_measured  # noqa: E402

MiB = 1 << 20
BUCKET = "bench"

FULL_SETS: dict[str, list[tuple[str, int]]] = {
    "one-big": [("saved_model.pb", 1024 * MiB)],
    "savedmodel": [("saved_model.pb", 8_000_000)]
    + [(f"variables/variables.data-{k:05d}-of-00004", 256 * MiB) for k in range(4)]
    + [("variables/variables.index", 4096)],
    "many-small": [("saved_model.pb", 100_000)] + [(f"assets/part-{k:05d}", 100_000) for k in range(1999)],
}
SMOKE_SETS: dict[str, list[tuple[str, int]]] = {
    "one-big": [("saved_model.pb", 24 * MiB)],
    "savedmodel": [("saved_model.pb", 1_000_000)]
    + [(f"variables/variables.data-{k:05d}-of-00004", 4 * MiB) for k in range(4)]
    + [("variables/variables.index", 4096)],
    "many-small": [("saved_model.pb", 100_000)] + [(f"assets/part-{k:05d}", 100_000) for k in range(59)],
}
GOALS = {  # set → (x best peer as users run it, x best peer + sync, x plain google-cloud-storage, x machine)
    "one-big": (1.0, 1.5, 3.0, 0.85),
    "savedmodel": (1.0, 1.5, 3.0, 0.85),
    "many-small": (None, 1.0, 3.0, None),
}
DISK_LIMITS = ("disk-dd", "disk-dd-direct")
NO_DISK = ("net-only",)  # reads the objects, writes nothing
REPORTS_SECONDS = ("puller", *DISK_LIMITS, *NO_DISK)  # one JSON line with in-process seconds (no interpreter start)


def write_sets(data_dir: Path, sets: dict[str, list[tuple[str, int]]]) -> None:
    """Write every set as files the emulator loads at start (random bytes, 8 MiB at a time)."""
    block = os.urandom(8 * MiB)
    for set_name, files in sets.items():
        for rel, size in files:
            path = data_dir / BUCKET / set_name / "m" / "1" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                left = size
                while left:
                    chunk = min(left, len(block))
                    out.write(os.urandom(16) + block[16:chunk] if chunk > 16 else os.urandom(chunk))
                    left -= chunk


PULLER_ARGS: list[str] = []


def contestants(
    fake: PreloadedEmulator, set_name: str, files: list[tuple[str, int]], dest: Path, scratch: Path
) -> dict[str, list[list[str]] | None]:
    """name → commands run one after the other (None: tool missing)."""
    python = sys.executable
    listing = scratch / f"{set_name}-files.json"
    listing.write_text(json.dumps(files))
    disk = [python, str(ROOT / "bench/download/disk_limit.py"), "--dest", str(dest), "--files", str(listing)]
    rclone = shutil.which("rclone")
    gcloud = shutil.which("gcloud")
    src = f"fake:{BUCKET}/{set_name}/m/1"
    tuned = ["--ignore-checksum", "--transfers", "16", "--multi-thread-streams", "8"]
    return {
        "puller": [
            [
                python,
                str(ROOT / "bench/download/puller_pass.py"),
                "--emulator",
                fake.url,
                "--remote",
                f"gs://{BUCKET}/{set_name}",
                "--local",
                str(dest),
                "--state",
                str(scratch),
                *PULLER_ARGS,
            ]
        ],
        "rclone-tuned": [[rclone, "copy", src, str(dest), *tuned]] if rclone else None,
        "rclone-tuned+sync": [[rclone, "copy", src, str(dest), *tuned], ["sync"]] if rclone else None,
        "rclone-defaults": [[rclone, "copy", src, str(dest)]] if rclone else None,
        "gcloud-cp": [[gcloud, "storage", "cp", "-r", f"gs://{BUCKET}/{set_name}/m/1", str(dest)]] if gcloud else None,
        "gcs-plain": [
            [python, str(ROOT / "bench/download/plain_gcs.py"), fake.url, BUCKET, f"{set_name}/m/1/", str(dest)]
        ],
        "disk-dd": [disk],
        "disk-dd-direct": [[*disk, "--direct"]],
        "net-only": [[python, str(ROOT / "bench/download/net_only.py"), fake.url, BUCKET, f"{set_name}/m/1/"]],
    }


def tool_env(fake: PreloadedEmulator, scratch: Path) -> dict[str, str]:
    return {
        **os.environ,
        **fake.env(),
        "CLOUDSDK_CONFIG": str(scratch / "gcloud"),
        "RCLONE_CONFIG_FAKE_TYPE": "google cloud storage",
        "RCLONE_CONFIG_FAKE_ENDPOINT": f"{fake.url}/storage/v1/",
        "RCLONE_CONFIG_FAKE_ANONYMOUS": "true",
        "RCLONE_CONFIG": str(scratch / "rclone.conf"),
    }


def downloaded_bytes(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and ".fleet" not in p.parts)


def measure_one(name: str, commands: list[list[str]], env: dict[str, str], dest: Path, total: int) -> dict[str, Any]:
    """One run of one contestant into an empty ``dest`` (after a ``sync`` so earlier runs' writes do not
    weigh on it)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    subprocess.run(["sync"], check=False)
    seconds, peak, outputs = 0.0, 0, []
    for command in commands:
        took, rss, code, out = run_measured(command, env=env)
        seconds += took
        peak = max(peak, rss)
        outputs.append(out)
        if code != 0:
            raise RuntimeError(f"{name} failed ({code}): {out[-2000:]}")
    got = downloaded_bytes(dest)
    if name in NO_DISK:
        got = json.loads(outputs[0].strip().splitlines()[-1])["bytes"]
    if got != total:
        raise RuntimeError(f"{name}: {got} bytes on disk, expected {total}")
    entry: dict[str, Any] = {"wall_seconds": seconds, "peak_rss_mb": peak / MiB, "bytes": got}
    if name in REPORTS_SECONDS:
        report = json.loads(outputs[0].strip().splitlines()[-1])
        if not report["ok"]:
            raise RuntimeError(f"{name} failed: {report.get('error')}")
        entry["pass_seconds"] = report["seconds"]
        seconds = report["seconds"]  # a long-running service: interpreter start excluded (wall above)
    entry["seconds"] = seconds
    entry["mb_per_s"] = total / seconds / 1e6
    return entry


def run_set(
    fake: PreloadedEmulator, set_name: str, files: list[tuple[str, int]], scratch: Path, rounds: int
) -> dict[str, Any]:
    """Every contestant ``rounds`` times, the order reversed each round (no one always goes first);
    the best run of each counts, every run is kept in the JSON."""
    total = sum(size for _, size in files)
    env = tool_env(fake, scratch)
    dest = scratch / "dest"
    plan = contestants(fake, set_name, files, dest, scratch)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, commands in plan.items() if commands is not None}
    order = list(runs)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else reversed(order):
            commands = plan[name]
            assert commands is not None
            runs[name].append(measure_one(name, commands, env, dest, total))
    results: dict[str, Any] = {}
    for name, commands in plan.items():
        if commands is None:
            results[name] = {"skipped": "not installed (apt-get install -y rclone / install the gcloud CLI)"}
            print(f"  {name:18s} skipped: not installed", flush=True)
            continue
        best = max(runs[name], key=lambda r: r["mb_per_s"])
        results[name] = {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[name]), "runs": runs[name]}
        all_rates = ", ".join(f"{r['mb_per_s']:.0f}" for r in runs[name])
        print(
            f"  {name:18s} {best['mb_per_s']:8.0f} MB/s  {best['seconds']:7.2f} s  "
            f"peak RSS {results[name]['peak_rss_mb']:6.0f} MB   (runs: {all_rates})",
            flush=True,
        )
    shutil.rmtree(dest, ignore_errors=True)
    return {"bytes": total, "objects": len(files), "results": results, "ratios": ratios(set_name, results)}


def ratios(set_name: str, results: dict[str, Any]) -> dict[str, Any]:
    def rate(*names: str) -> float | None:
        rates = [results[n]["mb_per_s"] for n in names if "mb_per_s" in results.get(n, {})]
        return max(rates) if rates else None

    ours = results["puller"]["mb_per_s"]
    best_as_run = rate("rclone-tuned", "rclone-defaults", "gcloud-cp", "gcs-plain")
    best_sync = rate("rclone-tuned+sync")
    plain = rate("gcs-plain")
    machine = rate(*DISK_LIMITS)
    network = rate(*NO_DISK)
    goal_run, goal_sync, goal_plain, goal_machine = GOALS[set_name]
    out: dict[str, Any] = {}
    for label, peer, goal in (
        ("vs_best_peer", best_as_run, goal_run),
        ("vs_best_peer_plus_sync", best_sync, goal_sync),
        ("vs_plain_gcs", plain, goal_plain),
        ("vs_machine_limit", machine, goal_machine),
        ("vs_network_only", network, None),
    ):
        if peer is None:
            out[label] = None
            continue
        ratio = ours / peer
        out[label] = {"ratio": round(ratio, 2), "goal": goal, "met": None if goal is None else ratio >= goal}
    out["puller_peak_rss_mb"] = round(results["puller"]["peak_rss_mb"], 1)
    out["rss_goal_met"] = results["puller"]["peak_rss_mb"] <= 150
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sets", nargs="*", help="only these sets")
    parser.add_argument("--puller-workers", type=int, help="override FLEET_DOWNLOAD_WORKERS for the puller")
    parser.add_argument("--puller-engine", choices=["native", "sdk"], help="FLEET_DOWNLOAD_ENGINE for the puller")
    parser.add_argument("--rounds", type=int, help="runs per contestant, order reversed each round (2; smoke 1)")
    args = parser.parse_args()
    if args.puller_workers:
        PULLER_ARGS.extend(["--workers", str(args.puller_workers)])
    if args.puller_engine:
        PULLER_ARGS.extend(["--engine", args.puller_engine])
    sets = SMOKE_SETS if args.smoke else FULL_SETS
    rounds = args.rounds or (1 if args.smoke else 2)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets}
    for tool in ("rclone", "gcloud"):
        if shutil.which(tool) is None:
            print(f"NOTE: {tool} not found on PATH: its rows are skipped (see bench/README.md)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-download-"))
    started = time.perf_counter()
    write_sets(scratch / "data", sets)
    fake = PreloadedEmulator(scratch / "data")
    shutil.rmtree(scratch / "data")
    print(f"emulator loaded {len(sets)} sets in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        report: dict[str, Any] = {"mode": "smoke" if args.smoke else "full", "cpus": os.cpu_count(), "sets": {}}
        for set_name, files in sets.items():
            size = sum(s for _, s in files)
            print(f"\n== {set_name}: {len(files)} objects, {size / 1e6:.1f} MB", flush=True)
            report["sets"][set_name] = run_set(fake, set_name, files, scratch, rounds)
            print("  ratios:", json.dumps(report["sets"][set_name]["ratios"]), flush=True)
    finally:
        fake.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
