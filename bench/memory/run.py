"""Memory of the two sidecars: VmRSS after an idle period, and its growth over many reconciles.

    .venv/bin/python bench/memory/run.py            # 50 models, 60 s idle, 100 reconciles each
    .venv/bin/python bench/memory/run.py --smoke    # 3 models, 2 s idle, 10 reconciles
    .venv/bin/python bench/memory/run.py --only config_manager --json out.json

config_manager runs as ``python -m services.config_manager`` against a real local_serving loaded with
N real SavedModels; each reconcile flips a label on every model in desired.json (so every pass
rewrites models.config, reloads and verifies). The puller runs as ``python -m
services.remote_model_puller`` against fake-gcs-server holding N models; each reconcile is a full
sync pass (list, compare, nothing to download after the first). Both are driven through their
``POST /v1/sync`` and ``GET /v1/status``, exactly as master drives them.

Goals (issue 6): config_manager <= 80 MB, puller <= 100 MB idle; growth <= 5 MB over the reconciles.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.common.atomic import atomic_write_json  # noqa: E402
from services.common.contracts import LocalDesired, LocalModelTarget  # noqa: E402
from services.common.contracts.local import desired_path  # noqa: E402
from services.local_fleet.ports import free_port  # noqa: E402

MB = 1024 * 1024
GOALS_MB = {"config_manager": 80.0, "puller": 100.0}
GROWTH_GOAL_MB = 5.0
TOKEN = "bench-token"


def vmrss_bytes(pid: int) -> int:
    """VmRSS of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


# The sidecar images do not install the `cli` extra (typer, rich): there httpx finds no click/rich and
# skips its own CLI module. This venv has every extra, so the measured process is told the same, or it
# would carry ~4 MB (click, rich, pygments) that production never loads.
AS_IN_THE_IMAGE = (
    "import runpy, sys; sys.modules['httpx._main'] = None; "
    "runpy.run_module(sys.argv[1], run_name='__main__', alter_sys=True)"
)


class Sidecar:
    """One service process under measurement, driven over HTTP."""

    def __init__(self, name: str, env: dict[str, str], port: int, log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.log = open(log_dir / f"{name}.log", "wb")
        module = "services.config_manager" if name == "config_manager" else "services.remote_model_puller"
        full_env = dict(os.environ, **env, FLEET_PORT=str(port), FLEET_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
        command = [sys.executable, "-c", AS_IN_THE_IMAGE, module]
        self.proc = subprocess.Popen(command, env=full_env, stdout=self.log, stderr=self.log)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def status(self) -> dict[str, Any]:
        response = self.http.get("/v1/status", headers=self.auth)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_idle_after_pass(self, timeout: float = 120) -> dict[str, Any]:
        def done() -> bool:
            body = self.status()
            return body["last_sync_at"] is not None and not body["syncing"]

        wait_for(done, timeout, f"{self.name} first pass")
        return self.status()

    def reconcile(self, timeout: float = 120) -> None:
        """Trigger one pass and wait until it has run."""
        before = self.status()["last_sync_at"]
        self.http.post("/v1/sync", headers=self.auth).raise_for_status()

        def ran() -> bool:
            body = self.status()
            return body["last_sync_at"] != before and not body["syncing"]

        wait_for(ran, timeout, f"{self.name} reconcile")

    def rss(self) -> int:
        return vmrss_bytes(self.proc.pid)

    def stop(self) -> None:
        self.http.close()
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def write_models(root: Path, count: int) -> list[str]:
    """N models, version 1 each, real SavedModels (one built, the rest copied)."""
    from tests.support.savedmodels import write_model

    names = [f"model-{i:03d}" for i in range(count)]
    first = write_model(root / names[0], 1)
    for name in names[1:]:
        shutil.copytree(first, root / name / "1")
    return names


def desire(root: Path, names: list[str], *, labelled: bool) -> None:
    models = {n: LocalModelTarget(serve=[1], labels={"stable": 1} if labelled else {}) for n in names}
    atomic_write_json(desired_path(root), LocalDesired(models=models))


def measure(sidecar: Sidecar, *, idle: float, reconciles: int, mutate: Callable[[int], None]) -> dict[str, Any]:
    first = sidecar.wait_idle_after_pass()
    time.sleep(idle)
    rss_idle = sidecar.rss()
    started = time.monotonic()
    for i in range(reconciles):
        mutate(i)
        sidecar.reconcile()
    seconds = time.monotonic() - started
    rss_after = sidecar.rss()
    last = sidecar.status()
    return {
        "rss_idle_mb": round(rss_idle / MB, 1),
        "rss_after_mb": round(rss_after / MB, 1),
        "growth_mb": round((rss_after - rss_idle) / MB, 2),
        "reconciles": reconciles,
        "reconcile_seconds_mean": round(seconds / max(reconciles, 1), 3),
        "first_pass_error": first.get("last_error"),
        "last_error": last.get("last_error"),
        "goal_rss_mb": GOALS_MB[sidecar.name],
        "rss_goal_met": rss_idle / MB <= GOALS_MB[sidecar.name],
        "growth_goal_met": (rss_after - rss_idle) / MB <= GROWTH_GOAL_MB,
    }


def bench_config_manager(work: Path, token_file: Path, *, models: int, idle: float, reconciles: int) -> dict[str, Any]:
    from tests.support.serving import start_local_serving

    root = work / "cm-models"
    config_file = work / "serving_config" / "models.config"
    root.mkdir(parents=True)
    config_file.parent.mkdir(parents=True)
    config_file.write_text("model_config_list {\n}\n")
    names = write_models(root, models)
    desire(root, names, labelled=False)
    serving = start_local_serving(config_file, extra_args=["--file_system_poll_wait_seconds=1"], timeout=120)
    env = {
        "LOCAL_MODEL_DIRECTORY": str(root),
        "TENSORFLOW_SERVING_CONFIG_FILE": str(config_file),
        "TENSORFLOW_SERVING_GRPC_TARGET": serving.target,
        "FLEET_TOKEN_FILE": str(token_file),
        "FLEET_MASTER_URL": f"http://127.0.0.1:{free_port()}",
        "FLEET_SYNC_INTERVAL_SECONDS": "3600",
        "FLEET_WATCH_INTERVAL_SECONDS": "0",
        "FLEET_LOAD_WAIT_SECONDS": "120",
        "FLEET_RELOAD_TIMEOUT_SECONDS": "120",
        "FLEET_LOG_FORMAT": "json",
        "FLEET_LOG_LEVEL": "WARNING",
        "HOSTNAME": "bench-node",
    }
    sidecar = Sidecar("config_manager", env, free_port(), work)
    try:
        result = measure(
            sidecar, idle=idle, reconciles=reconciles, mutate=lambda i: desire(root, names, labelled=i % 2 == 0)
        )
        status = sidecar.status()
        result["models_available"] = sum(1 for m in status["models"].values() if m.get("available"))
        result["reloads"] = status["details"]["reloads"]
        return result
    finally:
        sidecar.stop()
        serving.stop()


def bench_puller(work: Path, token_file: Path, *, models: int, idle: float, reconciles: int) -> dict[str, Any]:
    from tests.support.gcs import FakeGcs, upload_dir

    fake = FakeGcs()
    fake.start()
    try:
        source = work / "puller-source"
        names = write_models(source, models)
        bucket = fake.client().create_bucket("bench-models")
        for name in names:
            upload_dir(bucket, source / name / "1", f"models/{name}/1")
        root = work / "puller-models"
        root.mkdir()
        env = {
            **fake.env(),
            "REMOTE_MODEL_DIRECTORY": "gs://bench-models/models",
            "LOCAL_MODEL_DIRECTORY": str(root),
            "FLEET_TOKEN_FILE": str(token_file),
            "FLEET_MASTER_URL": f"http://127.0.0.1:{free_port()}",
            "FLEET_SYNC_INTERVAL_SECONDS": "3600",
            "FLEET_QUIET_PERIOD_SECONDS": "0",
            "FLEET_DISK_MARGIN_BYTES": "0",
            "FLEET_GCS_ENDPOINT": fake.url,
            "FLEET_LOG_FORMAT": "json",
            "FLEET_LOG_LEVEL": "WARNING",
            "HOSTNAME": "bench-node",
        }
        sidecar = Sidecar("puller", env, free_port(), work)
        try:
            result = measure(sidecar, idle=idle, reconciles=reconciles, mutate=lambda i: None)
            result["models_installed"] = sum(1 for n in names if (root / n / "1").is_dir())
            return result
        finally:
            sidecar.stop()
    finally:
        fake.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="3 models, 2 s idle, 10 reconciles")
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument("--reconciles", type=int, default=None)
    parser.add_argument("--only", choices=["config_manager", "puller"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    models = args.models or (3 if args.smoke else 50)
    idle = args.idle_seconds if args.idle_seconds is not None else (2.0 if args.smoke else 60.0)
    reconciles = args.reconciles or (10 if args.smoke else 100)
    report: dict[str, Any] = {"models": models, "idle_seconds": idle, "reconciles": reconciles, "results": {}}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        token_file = work / "token"
        token_file.write_text(TOKEN + "\n")
        runs = {"config_manager": bench_config_manager, "puller": bench_puller}
        for name, run in runs.items():
            if args.only and name != args.only:
                continue
            print(f"{name}: {models} models, {idle:.0f} s idle, {reconciles} reconciles ...", flush=True)
            try:
                report["results"][name] = run(work, token_file, models=models, idle=idle, reconciles=reconciles)
            except Exception as exc:  # report the other sidecar even if one cannot run
                report["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"NOTE: {name} could not be measured: {exc}", flush=True)
    for name, result in report["results"].items():
        if "error" in result:
            continue
        print(
            f"{name:15s} idle {result['rss_idle_mb']:6.1f} MB (goal <= {result['goal_rss_mb']:.0f}: "
            f"{'met' if result['rss_goal_met'] else 'MISSED'})   growth over {result['reconciles']} reconciles "
            f"{result['growth_mb']:+.2f} MB (goal <= {GROWTH_GOAL_MB:.0f}: "
            f"{'met' if result['growth_goal_met'] else 'MISSED'})   {result['reconcile_seconds_mean']:.3f} s/reconcile"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
