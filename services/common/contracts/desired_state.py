"""The desired-state document: ``gs://<bucket>/<prefix>/_fleet/state.json``, written only by master.

Per model it holds *overrides* of the default policy. A model absent from the document (or no document
at all) gets the default: serve its latest complete version, keep the one before it on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.contracts.base import INT64_MAX, Document, is_valid_model_name
from services.common.contracts.rollout import RolloutPolicy, RolloutRecord

DEFAULT_LATEST = 1
DEFAULT_KEEP = 1


def _check_versions(values: Sequence[int]) -> None:
    for v in values:
        if v < 0 or v > INT64_MAX:
            raise ValueError(f"version {v} is not a non-negative int64")


class NodeOverride(BaseModel):
    """Per-node overrides: ``pinned`` replaces the model's versions on that node (a rollout's wave target)."""

    model_config = ConfigDict(extra="ignore")
    pinned: list[int] | None = None


class ModelPolicy(BaseModel):
    """Overrides of the default policy for one model."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True
    pinned: list[int] | None = Field(default=None, description="explicit versions to serve")
    latest: int | None = Field(default=None, ge=1, le=100, description="serve the N latest complete versions")
    labels: dict[str, int] = Field(default_factory=dict)
    keep: int | None = Field(default=None, ge=0, le=100, description="extra versions held on disk for rollback")
    allow_signature_change: bool = False
    nodes: dict[str, NodeOverride] = Field(default_factory=dict)
    rollout: RolloutPolicy | None = Field(default=None, description="roll new versions out in waves")
    rollout_state: RolloutRecord | None = Field(default=None, description="written by master only")
    bad_versions: list[int] = Field(
        default_factory=list, description="marked bad fleet-wide (a failed rollout gate): never taken by default"
    )

    @model_validator(mode="after")
    def _exclusive(self) -> ModelPolicy:
        if self.pinned is not None and self.latest is not None:
            raise ValueError("set either 'pinned' or 'latest', not both")
        if self.pinned is not None:
            if not self.pinned:
                raise ValueError("'pinned' needs at least one version (use enabled=false to retire)")
            _check_versions(self.pinned)
        _check_versions(list(self.labels.values()))
        _check_versions(self.bad_versions)
        return self

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, int]) -> dict[str, int]:
        for name in labels:
            if not name or not all(c.isalnum() or c in "_-" for c in name) or name[0].isdigit():
                raise ValueError(f"invalid label {name!r}: letters, digits, '_', '-', not starting with a digit")
        return labels

    def is_default(self) -> bool:
        """True when this policy overrides nothing."""
        return self == ModelPolicy()


class DesiredStateDocument(Document):
    """The whole document. ``models`` maps model name → overrides. ``revision`` rises with each of master's
    writes (the write's time in ms, always above the previous revision): a document whose revision goes
    back was reset, not written by master (``successor_problem``)."""

    models: dict[str, ModelPolicy] = Field(default_factory=dict)
    rollout: RolloutPolicy | None = Field(default=None, description="the fleet's default rollout policy")
    revision: int = Field(default=0, ge=0, description="rises with every master write (0 = before revisions)")
    updated_at: datetime | None = None
    updated_by: str | None = None

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict[str, ModelPolicy]) -> dict[str, ModelPolicy]:
        for name in models:
            if not is_valid_model_name(name):
                raise ValueError(f"invalid model name {name!r}")
        return models

    def policy_for(self, model: str) -> ModelPolicy:
        """The effective overrides for ``model`` (defaults when absent)."""
        return self.models.get(model) or ModelPolicy()

    def rollout_for(self, model: str) -> RolloutPolicy | None:
        """The rollout policy in force for ``model``: its own, else the fleet default (None = no rollout)."""
        return self.policy_for(model).rollout or self.rollout


StateProblem = Literal["desired-state-missing", "desired-state-reset"]


def successor_problem(
    *, last_revision: int, last_generation: int, found: DesiredStateDocument | None, generation: int | None
) -> StateProblem | None:
    """Judge the document found in the bucket against the last good one seen (revision, generation).

    Missing once one was seen: ``desired-state-missing``. A revision that went back, or the same non-zero
    revision at another generation (a copy put back by hand): ``desired-state-reset``. The last good
    document keeps ruling in both cases until an admin decides (master's ``/v1/state``). Documents
    written before revisions (0) are accepted, so an upgrade raises no alarm.
    """
    if found is None or generation is None:
        return "desired-state-missing"
    if generation == last_generation:
        return None
    if found.revision < last_revision or (found.revision == last_revision > 0):
        return "desired-state-reset"
    return None


class ResolvedModel(BaseModel):
    """Concrete versions for one model: what to serve, what to hold on disk, where labels point."""

    serve: list[int]
    keep: list[int]
    labels: dict[str, int]
    enabled: bool = True
    allow_signature_change: bool = False
    waiting_for: list[int] = Field(default_factory=list, description="wanted versions not complete in the bucket")


def resolve_model(
    policy: ModelPolicy,
    complete_versions: Sequence[int],
    *,
    node: str | None = None,
    rollout: bool = False,
    hold: Sequence[int] | None = None,
) -> ResolvedModel:
    """Turn a policy into concrete version sets given the complete versions in the bucket.

    - ``enabled=false``: nothing served or kept (the model is retired on purpose).
    - ``nodes[node].pinned``, else ``pinned``: exactly those versions (those not complete yet are
      reported in ``waiting_for``).
    - ``rollout`` (a rollout policy is in force) and nothing pinned yet: ``hold`` (what the node served
      before) until master writes the baseline; a node that served nothing takes the latest.
    - else the ``latest`` N (default 1) complete versions, never one of ``bad_versions``.
    - Label targets are always served too (a label can only point at a loaded version).
    - ``keep`` (default 1) more complete versions below the lowest served one stay on disk, plus an
      active rollout's previous versions (every node can go back without a download).
    ``keep`` is always a superset of ``serve``; all lists are sorted ascending.
    """
    if not policy.enabled:
        return ResolvedModel(serve=[], keep=[], labels={}, enabled=False)
    complete = sorted(set(complete_versions))
    candidates = [v for v in complete if v not in set(policy.bad_versions)]
    pinned = policy.pinned
    if node is not None and node in policy.nodes and policy.nodes[node].pinned:
        pinned = policy.nodes[node].pinned
    if pinned is not None:
        wanted = set(pinned)
    elif rollout and hold:
        wanted = set(hold)
    else:
        wanted = set(candidates[-(policy.latest or DEFAULT_LATEST) :]) if candidates else set()
    wanted |= set(policy.labels.values())
    available = set(complete)
    serve = sorted(wanted & available)
    waiting = sorted(wanted - available)
    keep_extra = DEFAULT_KEEP if policy.keep is None else policy.keep
    floor = min(serve) if serve else None
    older = [v for v in complete if floor is None or v < floor]
    kept = set(serve) | set(older[-keep_extra:] if keep_extra else [])
    if policy.rollout_state is not None and policy.rollout_state.active:
        kept |= set(policy.rollout_state.previous) & available
    labels = {name: v for name, v in policy.labels.items() if v in available}
    return ResolvedModel(
        serve=serve,
        keep=sorted(kept),
        labels=labels,
        allow_signature_change=policy.allow_signature_change,
        waiting_for=waiting,
    )
