"""Progressive rollout in the desired-state document: the policy (waves, bake, gates) and master's record.

The rule (docs/architecture.md, "Rollout"): with a rollout policy in force for a model, nodes never
advance by themselves. The model's ``pinned`` is the baseline every node serves; master moves it. During
a rollout master writes ``nodes[<host>].pinned = [version]`` for the nodes of the waves reached so far,
and ``rollout_state`` records where the rollout stands, so a restarted master resumes from the document.
Versions in ``bad_versions`` are never taken by default (a new version number, or an explicit pin, is
needed).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RolloutStateName = Literal["running", "paused", "baking", "waiting", "reverted", "aborted", "done"]
WaveState = Literal["pending", "running", "baking", "passed", "failed", "aborted"]
ACTIVE_STATES: frozenset[str] = frozenset({"running", "paused", "baking", "waiting"})
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
DEFAULT_WAVES: list[int | str] = [1, "25%", "100%"]


def wave_fraction(size: int | str) -> tuple[int | None, float | None]:
    """``3`` → (3, None) nodes; ``"25%"`` → (None, 0.25) of the fleet. ValueError when neither."""
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"wave size {size}: a node count must be >= 1")
        return size, None
    match = _PERCENT.match(size.strip())
    if match is None:
        raise ValueError(f"wave size {size!r}: a node count (e.g. 1) or a percentage (e.g. '25%')")
    percent = float(match.group(1))
    if not 0 < percent <= 100:
        raise ValueError(f"wave size {size!r}: a percentage must be in (0, 100]")
    return None, percent / 100


class RolloutPolicy(BaseModel):
    """How a model's new versions reach the fleet: waves, bake time per wave, and gate margins."""

    model_config = ConfigDict(extra="ignore")

    waves: list[int | str] = Field(
        default_factory=lambda: list(DEFAULT_WAVES),
        description="cumulative wave sizes: node counts (1) or percentages of the fleet ('25%'); the last "
        "wave always reaches every node",
    )
    bake_seconds: float = Field(default=300.0, ge=0, le=7 * 86400, description="bake time of each wave")
    max_error_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="wave error rate may exceed the other nodes' by this much (0.01 = 1 pt)"
    )
    max_p99_ratio: float = Field(default=1.5, ge=1, le=100, description="wave p99 latency / other nodes' p99")
    p99_slack_ms: float = Field(default=20.0, ge=0, description="p99 differences below this never fail the gate")
    min_requests: int = Field(default=50, ge=1, description="requests a wave needs before traffic gates judge")

    @field_validator("waves")
    @classmethod
    def _waves(cls, waves: list[int | str]) -> list[int | str]:
        if not waves or len(waves) > 20:
            raise ValueError("'waves' needs 1 to 20 entries")
        for size in waves:
            wave_fraction(size)
        return waves


class Wave(BaseModel):
    """One wave: the nodes it moves to the new version (not the earlier waves' nodes) and its progress."""

    model_config = ConfigDict(extra="ignore")

    nodes: list[str]
    state: WaveState = "pending"
    started_at: datetime | None = None
    baking_since: datetime | None = Field(default=None, description="every node AVAILABLE from this time on")


class RolloutRecord(BaseModel):
    """master's record of one model's rollout (the state document is its only home)."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(ge=0)
    previous: list[int] = Field(default_factory=list, description="the baseline served before the rollout")
    state: RolloutStateName = "running"
    wave: int = Field(default=0, ge=0, description="0-based index of the current wave")
    waves: list[Wave]
    bake_seconds: float = Field(ge=0)
    promoted: bool = Field(default=False, description="the operator skipped the current wave's remaining bake")
    reason: str | None = Field(default=None, description="why it was reverted or aborted (gate and figures)")
    started_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def reached_nodes(self) -> list[str]:
        """Nodes of the waves started so far (they serve the new version while the rollout is active)."""
        return sorted({n for wave in self.waves[: self.wave + 1] for n in wave.nodes})
