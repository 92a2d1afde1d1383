"""Cluster operations: trigger sidecars' ``POST /v1/sync`` / ``POST /v1/gc`` on many nodes at once.

Every call runs concurrently through a bounded pool with a deadline of one node timeout (including the
wait for a pool slot), so the whole operation answers within about one node timeout. Sidecars answer
202 at once and do the work in the background; their status shows progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from services.master.registry import SidecarRecord
from services.master.wire import SidecarClient, WireError, WireResponse

Operation = Literal["sync", "gc"]

# Which sidecars take part in each operation, and the path to call on them.
OPERATION_PATHS: dict[str, dict[str, str]] = {
    "sync": {"puller": "/v1/sync", "config_manager": "/v1/sync"},
    "gc": {"config_manager": "/v1/gc"},
}


class SidecarCallResult(BaseModel):
    role: str
    ok: bool
    status_code: int | None = None
    error: str | None = None
    timed_out: bool = False
    elapsed_seconds: float


class NodeOperationResult(BaseModel):
    hostname: str
    healthy: bool
    ok: bool
    results: list[SidecarCallResult] = Field(default_factory=list)


class OperationResult(BaseModel):
    operation: str
    ok: bool
    nodes_total: int
    nodes_ok: int
    elapsed_seconds: float
    nodes: list[NodeOperationResult]


def participants(operation: str, records: Sequence[SidecarRecord]) -> list[SidecarRecord]:
    """The sidecars an operation calls."""
    roles = OPERATION_PATHS[operation]
    return [r for r in records if r.role in roles]


async def _call(
    record: SidecarRecord, operation: str, client: SidecarClient, pool: asyncio.Semaphore, deadline: float
) -> SidecarCallResult:
    url = record.base_url + OPERATION_PATHS[operation][record.role]
    began = time.monotonic()

    async def post() -> WireResponse:
        async with pool:
            return await client.request("POST", url)

    try:
        response = await asyncio.wait_for(post(), deadline)
    except TimeoutError:
        return SidecarCallResult(
            role=record.role,
            ok=False,
            timed_out=True,
            error=f"no answer within {deadline:g}s",
            elapsed_seconds=time.monotonic() - began,
        )
    except WireError as exc:
        return SidecarCallResult(role=record.role, ok=False, error=str(exc), elapsed_seconds=time.monotonic() - began)
    ok = 200 <= response.status < 300
    return SidecarCallResult(
        role=record.role,
        ok=ok,
        status_code=response.status,
        error=None if ok else f"HTTP {response.status}",
        elapsed_seconds=time.monotonic() - began,
    )


async def fan_out(
    operation: str,
    records: Sequence[SidecarRecord],
    client: SidecarClient,
    *,
    node_timeout: float,
    concurrency: int,
    is_healthy: Callable[[str], bool],
) -> OperationResult:
    """Run ``operation`` on every participating sidecar of ``records``; per-node results, sorted by host."""
    began = time.monotonic()
    chosen = participants(operation, records)
    pool = asyncio.Semaphore(concurrency)
    calls = await asyncio.gather(*(_call(r, operation, client, pool, node_timeout) for r in chosen))
    by_host: dict[str, list[SidecarCallResult]] = {}
    for record, result in zip(chosen, calls, strict=True):
        by_host.setdefault(record.hostname, []).append(result)
    nodes = [
        NodeOperationResult(hostname=host, healthy=is_healthy(host), ok=all(r.ok for r in results), results=results)
        for host, results in sorted(by_host.items())
    ]
    return OperationResult(
        operation=operation,
        ok=all(n.ok for n in nodes),
        nodes_total=len(nodes),
        nodes_ok=sum(n.ok for n in nodes),
        elapsed_seconds=round(time.monotonic() - began, 3),
        nodes=nodes,
    )
