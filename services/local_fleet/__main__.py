"""``python -m services.local_fleet up``: the README's run command.

Starts fake GCS, master and N simulated nodes, publishes an example model (versions 1 then 2, made with
TensorFlow) as an ML engineer would, shows the fleet converging, prints what serves where and sample
Predict answers, then runs until Ctrl-C and shuts everything down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.local_fleet.convergence import predict_once, wait_available
from services.local_fleet.fleet import FleetOptions, LocalFleet

app = typer.Typer(add_completion=False, help="Run a modelfleet fleet on this machine.")
console = Console()
EXAMPLE_MODEL = "example"


@app.callback()
def main() -> None:
    """Run a modelfleet fleet on this machine."""


def _publish_and_watch(fleet: LocalFleet, version: int, work: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a CLI: keep TensorFlow's C++ start-up logs quiet
    from services.local_fleet.savedmodels import write_model  # TensorFlow is heavy: import on use

    version_dir = write_model(work, version)
    objects = fleet.publish(EXAMPLE_MODEL, version_dir)
    console.print(
        f"published [bold]{EXAMPLE_MODEL}[/] v{version}: {len(objects)} objects → {fleet.remote_model_directory}"
    )
    with console.status(f"waiting for {EXAMPLE_MODEL} v{version} to be AVAILABLE on every node…") as status:

        def progress(seen: dict[str, list[int]]) -> None:
            status.update("  ".join(f"{host}: {versions or '-'}" for host, versions in seen.items()))

        asyncio.run(wait_available(fleet.nodes, EXAMPLE_MODEL, [version], timeout=240, on_progress=progress))
    console.print(f"[green]✓[/] v{version} AVAILABLE on all {len(fleet.nodes)} nodes")


def _summary(fleet: LocalFleet) -> None:
    table = Table(title="What serves where")
    for column in ("node", "TF Serving gRPC", "Predict x=1"):
        table.add_column(column)
    for node in fleet.nodes:
        version, y = asyncio.run(predict_once(node, EXAMPLE_MODEL))
        table.add_row(node.hostname, node.grpc_target, f"v{version} → y={y:g}")
    console.print(table)
    for node in fleet.nodes:
        console.print(
            f"{node.hostname} status: http://127.0.0.1:{node.puller_port}/v1/status (puller), "
            f"http://127.0.0.1:{node.config_manager_port}/v1/status (config_manager; Bearer: the fleet token)",
            soft_wrap=True,
        )
    token_file = fleet.root / "secrets" / "admin_tokens"
    console.print(f"\nmaster admin API: {fleet.master_url}  (OpenAPI docs: {fleet.master_url}/docs)", soft_wrap=True)
    fleet_token = fleet.root / "secrets" / "fleet_token"
    console.print(f"tokens: {token_file} (line 1 admin, line 2 read-only); sidecars' fleet token: {fleet_token}")
    console.print(f"dashboard: {fleet.master_url}/  (paste the token part of a line of {token_file})", soft_wrap=True)
    console.print("\ntry fleetctl:")
    console.print(f"  export FLEETCTL_MASTER={fleet.master_url}")
    console.print(f"  export FLEETCTL_TOKEN=$(head -1 {token_file} | cut -d: -f2-)")
    for example in (
        "status",
        "models",
        f"pin {EXAMPLE_MODEL} 1",
        f"label {EXAMPLE_MODEL} stable 1",
        f"rollback {EXAMPLE_MODEL}",
        "diff",
        "audit",
    ):
        console.print(f"  .venv/bin/fleetctl {example}")
    console.print("\nlogs: " + str(fleet.root / "logs") + "   layout: " + str(fleet.root / "fleet.json"))


@app.command()
def up(
    nodes: Annotated[int, typer.Option(min=1, max=16, help="simulated nodes")] = 3,
    root: Annotated[Path, typer.Option(help="working directory (wiped at start)")] = Path(".fleet-run"),
    master_port: Annotated[int, typer.Option(help="master's port on 127.0.0.1")] = 8080,
    publish: Annotated[bool, typer.Option(help="publish the example model")] = True,
    rollout_demo: Annotated[
        bool, typer.Option(help="then roll out a version that fails on real traffic (stopped at wave 1, reverted)")
    ] = False,
    events: Annotated[
        bool, typer.Option(help="bucket notifications through the Pub/Sub emulator (google-cloud-cli-pubsub-emulator)")
    ] = False,
) -> None:
    """Start the fleet, publish the example model, and run until Ctrl-C."""
    fleet = LocalFleet(root.resolve(), FleetOptions(nodes=nodes, master_port=master_port, events=events))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status(f"starting fake GCS, master and {nodes} nodes…"):
            fleet.start()
        fleet.write_description()
        console.print(f"[green]✓[/] fleet up: master {fleet.master_url}, bucket {fleet.remote_model_directory}")
        if publish:
            work = Path(tempfile.mkdtemp(prefix="example-model-"))
            _publish_and_watch(fleet, 1, work)
            _publish_and_watch(fleet, 2, work)
            if rollout_demo:
                from services.local_fleet.rollout_demo import run_demo

                run_demo(fleet, EXAMPLE_MODEL, work, version=3, console=console)
            _summary(fleet)
        console.print("\n[bold]running — press Ctrl-C to stop[/]")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            fleet.stop()
        console.print("stopped")


if __name__ == "__main__":
    app()
