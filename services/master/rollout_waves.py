"""The wave planner: which nodes each wave of a rollout moves, and the per-node pins a rollout implies.

Pure functions (no I/O), so master's driver, its restart and the tests agree on one plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.common.contracts.desired_state import ModelPolicy, NodeOverride
from services.common.contracts.rollout import RolloutRecord, wave_fraction


def plan_waves(hosts: Sequence[str], sizes: Sequence[int | str]) -> list[list[str]]:
    """Split ``hosts`` (sorted by name, so the plan is reproducible) into waves of new nodes.

    Sizes are cumulative: ``[1, "25%", "100%"]`` on 8 nodes moves 1, then 1 more (25 % = 2), then the
    other 6. Every wave moves at least one node; a size that adds none is skipped; the last wave always
    reaches every node. No hosts: no waves.
    """
    ordered = sorted(set(hosts))
    total = len(ordered)
    waves: list[list[str]] = []
    reached = 0
    for index, size in enumerate(sizes):
        count, fraction = wave_fraction(size)
        target = count if count is not None else math.ceil((fraction or 0) * total - 1e-9)
        if index == len(sizes) - 1:
            target = total
        target = min(max(target, reached + 1), total)
        if target > reached:
            waves.append(ordered[reached:target])
            reached = target
    return waves


def rollout_overrides(policy: ModelPolicy, record: RolloutRecord | None) -> dict[str, NodeOverride]:
    """The ``nodes`` entry a model should have: the reached nodes pinned to the new version while the
    rollout is active, nothing otherwise. Overrides of other nodes (set by hand) are kept."""
    reached = set(record.reached_nodes()) if record is not None and record.active else set()
    version = record.version if record is not None else None
    nodes = {
        host: override
        for host, override in policy.nodes.items()
        if host not in reached and not (version is not None and override.pinned == [version])
    }
    for host in sorted(reached):
        nodes[host] = NodeOverride(pinned=[version] if version is not None else None)
    return nodes
