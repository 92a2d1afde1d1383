"""``python -m services.local_fleet up --nodes 5 --rollout-demo``: a bad version stopped at the first wave.

After the example model serves everywhere, it is put under a rollout policy (waves 1 node / 50 % / 100 %,
bake 10 s) and a version is published that loads and passes its warm-up but fails every real call
(x = 2). A light search-like load (every node, 600 ms deadlines) runs meanwhile; master's error-rate gate
sees the first wave fail and reverts it. Prints the rollout and the calls per node.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.common.errors import TFServingError
from services.common.tfs import TFServingClient
from services.local_fleet.convergence import wait_available
from services.local_fleet.fleet import LocalFleet

POLICY = {"waves": [1, "50%", "100%"], "bake_seconds": 10, "min_requests": 20}
X = 2.0


def _rollout(fleet: LocalFleet, model: str) -> dict[str, Any] | None:
    with fleet.reader() as client:
        response = client.get(f"/v1/rollouts/{model}")
    return response.json() if response.status_code == 200 else None


async def _load_until_reverted(
    fleet: LocalFleet, model: str, version: int, *, timeout: float
) -> tuple[dict[str, Any], Counter[str], Counter[str]]:
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    clients = {n.hostname: TFServingClient(n.grpc_target) for n in fleet.nodes}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for host, client in clients.items():
                try:
                    await client.predict(model, {"x": ([X], (1, 1))}, timeout=0.6)
                except TFServingError:
                    failed[host] += 1
                else:
                    ok[host] += 1
            view = await asyncio.to_thread(_rollout, fleet, model)
            if view is not None and view["version"] == version and view["state"] in ("reverted", "done"):
                return view, ok, failed
            await asyncio.sleep(0.05)
    finally:
        for client in clients.values():
            await client.close()
    raise TimeoutError(f"the rollout of {model} v{version} did not end within {timeout}s")


def run_demo(fleet: LocalFleet, model: str, work: Path, *, version: int, console: Console) -> None:
    """Roll out a version that fails on real traffic and show it stopped at the first wave."""
    from services.local_fleet.savedmodels import write_model  # TensorFlow is heavy: import on use

    with fleet.admin() as client:
        etag = client.get(f"/v1/models/{model}").headers["etag"]
        client.put(f"/v1/models/{model}", json={"rollout": POLICY}, headers={"If-Match": etag}).raise_for_status()
    console.print(f"rollout policy on [bold]{model}[/]: {POLICY}")
    fleet.publish(model, write_model(work, version, warmup_requests=2, fail_above=1.5))
    console.print(f"published v{version}: loads, passes its warm-up, fails every real call (x={X:g})")
    with console.status("search-like load on every node until master decides…"):
        view, ok, failed = asyncio.run(_load_until_reverted(fleet, model, version, timeout=300))
    waves = Table(title=f"rollout of {model} v{version}: {view['state']}")
    for column in ("wave", "nodes", "state"):
        waves.add_column(column)
    for index, wave in enumerate(view["waves"]):
        waves.add_row(str(index + 1), ", ".join(wave["nodes"]), wave["state"])
    console.print(waves)
    console.print(f"reason: {view['reason']}\nmarked bad: {view['bad_versions']}")
    calls = Table(title="calls during the rollout")
    for column in ("node", "ok", "failed"):
        calls.add_column(column)
    for node in fleet.nodes:
        calls.add_row(node.hostname, str(ok[node.hostname]), str(failed[node.hostname]))
    console.print(calls)
    with console.status(f"waiting for {', '.join(view['waves'][0]['nodes'])} to serve v{version - 1} alone again…"):
        asyncio.run(wait_available(fleet.nodes, model, [version - 1], timeout=120))
    console.print(f"[green]✓[/] v{version - 1} alone on every node again; v{version} is marked bad fleet-wide")
