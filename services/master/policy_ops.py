"""Desired-state operations on one model: replace the policy, move/remove a label, roll back.

Rollback (DESIGN.md leaves the rule open; this is the one chosen): every audit entry records the
versions the model served just before that change (``serving_before``). Rollback pins the
``serving_before`` of the newest entry of the model whose set differs from what it serves now and whose
versions are all still complete. Without such an entry (e.g. serving changed only because a new version
arrived under the default policy) it pins the newest complete version below the lowest one served now.
Labels pointing at versions outside the rollback target move to the highest target version. A rollback
is itself audited, so a second rollback undoes the first.
"""

from __future__ import annotations

from collections.abc import Collection

from services.common.completeness import ModelScan
from services.common.contracts import AuditEntry, ModelPolicy, resolve_model
from services.common.errors import Conflict, NotFound
from services.master.desired import ChangeResult, DesiredStore

ROLLBACK_HISTORY = 100
MASTER_FIELDS = ("rollout_state", "nodes", "bad_versions")


async def set_policy(
    store: DesiredStore,
    model: str,
    policy: ModelPolicy,
    *,
    actor: str,
    if_match: int | None,
    served: Collection[str] = (),
    given: Collection[str] | None = None,
) -> ChangeResult:
    """Replace the model's overrides wholesale (``served``: models nodes still serve, retirable even when
    gone from the bucket). Fields master writes itself (a rollout's record, per-node pins, the versions
    marked bad) are kept unless ``given`` (the fields the caller sent) names them: an edit of the policy
    neither forgets a bad version nor drops a rollout by accident."""

    def mutate(base: ModelPolicy, _scan: ModelScan | None) -> ModelPolicy:
        if given is None:
            return policy
        kept = {name: getattr(base, name) for name in MASTER_FIELDS if name not in given}
        return policy.model_copy(update=kept)

    return await store.change(model, mutate, actor=actor, action="set-policy", if_match=if_match, served=served)


async def set_label(
    store: DesiredStore, model: str, label: str, version: int, *, actor: str, if_match: int | None
) -> ChangeResult:
    """Point ``label`` at ``version`` (which must be complete in the bucket)."""

    def mutate(base: ModelPolicy, _scan: ModelScan | None) -> ModelPolicy:
        base.labels[label] = version
        return base

    return await store.change(model, mutate, actor=actor, action=f"label {label}={version}", if_match=if_match)


async def unset_label(store: DesiredStore, model: str, label: str, *, actor: str, if_match: int | None) -> ChangeResult:
    """Remove ``label`` (404 when the model has no such label)."""

    def mutate(base: ModelPolicy, _scan: ModelScan | None) -> ModelPolicy:
        if label not in base.labels:
            raise NotFound(f"model {model!r} has no label {label!r}", model=model, label=label)
        del base.labels[label]
        return base

    return await store.change(model, mutate, actor=actor, action=f"unlabel {label}", if_match=if_match)


def rollback_target(entries: list[AuditEntry], *, serving: list[int], complete: list[int]) -> list[int]:
    """The versions to go back to (entries newest first); Conflict when there is nothing to go back to."""
    available = set(complete)
    for entry in entries:
        before = entry.serving_before
        if before and set(before) != set(serving) and set(before) <= available:
            return sorted(set(before))
    older = [v for v in complete if serving and v < min(serving)]
    if older:
        return [older[-1]]
    raise Conflict(f"nothing to roll back to: serving {serving}, complete versions {complete}")


async def rollback(store: DesiredStore, model: str, *, actor: str, if_match: int | None) -> ChangeResult:
    """Pin the previous serving versions (rule in the module docstring)."""
    entries = await store.audit(limit=ROLLBACK_HISTORY, model=model)

    def mutate(base: ModelPolicy, scan: ModelScan | None) -> ModelPolicy:
        complete = scan.complete_versions if scan else []
        serving = resolve_model(base, complete).serve
        target = rollback_target(entries, serving=serving, complete=complete)
        labels = {name: (v if v in target else max(target)) for name, v in base.labels.items()}
        return base.model_copy(update={"pinned": target, "latest": None, "labels": labels, "enabled": True})

    return await store.change(model, mutate, actor=actor, action="rollback", if_match=if_match)
