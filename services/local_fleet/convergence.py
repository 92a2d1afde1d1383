"""Watch the fleet converge, straight from each node's model server (independent of master)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from services.common.errors import TFServingError
from services.common.tfs import TFServingClient, VersionState
from services.local_fleet.fleet import Node


async def available_versions(node: Node, model: str, *, timeout: float = 2.0) -> list[int]:
    """Versions of ``model`` AVAILABLE on ``node`` now ([] if unknown or unreachable)."""
    async with TFServingClient(node.grpc_target) as client:
        try:
            statuses = await client.get_model_status(model, timeout=timeout)
        except TFServingError:
            return []
    return sorted(s.version for s in statuses if s.state == VersionState.AVAILABLE)


async def wait_available(
    nodes: Sequence[Node],
    model: str,
    versions: Sequence[int],
    *,
    timeout: float,
    exact: bool = True,
    on_progress: Callable[[dict[str, list[int]]], None] | None = None,
) -> dict[str, list[int]]:
    """Wait (bounded) until every node has ``versions`` AVAILABLE (exactly those when ``exact``)."""
    wanted = sorted(versions)
    deadline = time.monotonic() + timeout
    while True:
        seen = {n.hostname: await available_versions(n, model) for n in nodes}
        if on_progress is not None:
            on_progress(seen)
        done = all((v == wanted) if exact else set(wanted) <= set(v) for v in seen.values())
        if done:
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} not converged to {wanted} within {timeout}s: {seen}")
        await asyncio.sleep(0.5)


async def predict_once(node: Node, model: str, x: float = 1.0, *, label: str | None = None) -> tuple[int, float]:
    """One Predict on ``node``: (answering version, y)."""
    async with TFServingClient(node.grpc_target) as client:
        result = await client.predict(model, {"x": ([x], (1, 1))}, label=label, timeout=2.0)
    return result.version, float(result.outputs["y"][0])
