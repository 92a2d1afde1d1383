"""Planning a sync pass: a pure function from (listing scan, desired state, local disk) to targets and work.

No I/O here: :mod:`.sync` gathers the inputs, this module decides, so every rule is testable alone.

- Per model, ``resolve_model`` turns the policy and the complete remote versions into ``serve``/``keep``.
  Under a rollout policy the node never advances by itself: it serves its per-node pin (a wave), else
  the model's pin (the baseline master writes), else what it served before.
  Versions that failed to download or install (same fingerprint) are not counted as complete.
- Mass-removal guard: a model that was being served, is still enabled, and now has no complete version
  in the listing keeps its previous target unchanged (nothing is unloaded) and raises a critical alarm.
  Only ``enabled: false`` retires a model.
- ``fetch``: versions of ``keep`` that are complete remotely and not on disk, served ones first.
- Drift: an installed version whose remote (name, generation) fingerprint differs from its manifest.
  It is replaced (``replace``) only if failed.json records the installed bytes as failed, or if the
  start-up check found the installed copy broken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.completeness import BucketScan, VersionScan
from services.common.contracts import (
    Alarm,
    DesiredStateDocument,
    FailedDocument,
    LocalDesired,
    LocalModelTarget,
    Manifest,
    resolve_model,
)
from services.common.contracts.base import utcnow
from services.common.contracts.local import generations_fingerprint


def remote_fingerprint(scan: VersionScan, prefix: str) -> str:
    """The fingerprint a manifest of this remote version would have."""
    return generations_fingerprint((scan.relative_name(o, prefix), o.generation) for o in scan.objects)


@dataclass
class LocalVersion:
    """An installed version: its manifest (None = not written yet) and a start-up problem, if any."""

    manifest: Manifest | None
    broken: str | None = None


@dataclass
class ModelPlan:
    target: LocalModelTarget
    frozen: bool = False
    remote_complete: list[int] = field(default_factory=list)
    remote_incomplete: dict[str, str] = field(default_factory=dict)
    waiting_for: list[int] = field(default_factory=list)
    fetch: list[int] = field(default_factory=list)
    replace: list[int] = field(default_factory=list)
    drift: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Plan:
    models: dict[str, ModelPlan] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)

    def desired(self, *, generation: int | None, hostname: str) -> LocalDesired:
        """The desired.json this plan stands for."""
        return LocalDesired(
            models={name: p.target for name, p in sorted(self.models.items())},
            generation=generation,
            written_by=hostname,
        )


@dataclass(frozen=True)
class PlanInputs:
    scan: BucketScan
    prefix: str
    document: DesiredStateDocument
    hostname: str
    previous: LocalDesired | None
    installed: Mapping[str, Mapping[int, LocalVersion]]
    failed: FailedDocument
    failed_versions: Mapping[tuple[str, int], str]  # (model, version) → remote fingerprint that failed
    guard: bool = True


def make_plan(inputs: PlanInputs) -> Plan:
    """Decide targets, downloads, replacements, drift and alarms for every known model."""
    plan = Plan()
    names = set(inputs.scan.models) | set(inputs.document.models)
    if inputs.previous is not None:
        names |= set(inputs.previous.models)
    for name in sorted(names):
        model_plan = _plan_model(name, inputs, plan)
        if model_plan is not None:
            plan.models[name] = model_plan
    return plan


def _plan_model(name: str, inputs: PlanInputs, plan: Plan) -> ModelPlan | None:
    scan = inputs.scan.models.get(name)
    policy = inputs.document.policy_for(name)
    versions = scan.versions if scan is not None else {}
    complete = [
        v
        for v in (scan.complete_versions if scan is not None else [])
        if inputs.failed_versions.get((name, v)) != remote_fingerprint(versions[v], inputs.prefix)
    ]
    previous = inputs.previous.models.get(name) if inputs.previous is not None else None
    resolved = resolve_model(
        policy,
        complete,
        node=inputs.hostname,
        rollout=inputs.document.rollout_for(name) is not None,
        hold=previous.serve if previous is not None and previous.enabled else None,
    )
    model_plan = ModelPlan(
        target=LocalModelTarget(
            serve=resolved.serve,
            keep=resolved.keep,
            labels=resolved.labels,
            enabled=resolved.enabled,
            allow_signature_change=resolved.allow_signature_change,
        ),
        remote_complete=complete,
        remote_incomplete={str(v): r for v, r in (scan.incomplete if scan is not None else {}).items()},
        waiting_for=resolved.waiting_for,
    )
    for (model, version), _fp in inputs.failed_versions.items():
        if model == name:
            model_plan.problems.append(f"version {version}: not installed (see failed); retried when its bytes change")
    if policy.enabled and not complete and previous is not None and previous.enabled and previous.serve:
        if inputs.guard:
            model_plan.target = previous
            model_plan.frozen = True
            plan.alarms.append(
                Alarm(
                    kind="mass-removal",
                    model=name,
                    severity="critical",
                    since=utcnow(),
                    message=f"served model {name} has no complete version in the bucket listing; "
                    "nothing unloaded (set enabled=false to retire it)",
                )
            )
            _check_installed(name, inputs, versions, model_plan)
            return model_plan
    if scan is None and name not in inputs.document.models and (previous is None or not previous.serve):
        return None  # gone from the bucket, never served here: nothing to say
    _check_installed(name, inputs, versions, model_plan)
    on_disk = inputs.installed.get(name, {})
    ordered = sorted(model_plan.target.serve, reverse=True) + sorted(
        set(model_plan.target.keep) - set(model_plan.target.serve), reverse=True
    )
    model_plan.fetch = [v for v in ordered if v in complete and v not in on_disk]
    return model_plan


def _check_installed(name: str, inputs: PlanInputs, versions: Mapping[int, VersionScan], plan: ModelPlan) -> None:
    """Drift and replacement decisions for installed versions."""
    for version, local in sorted(inputs.installed.get(name, {}).items()):
        remote = versions.get(version)
        if local.manifest is None:
            plan.problems.append(f"version {version}: on disk without a manifest")
            continue
        installed_fp = local.manifest.fingerprint()
        if remote is None or not remote.complete:
            if local.broken:
                plan.problems.append(f"version {version}: {local.broken}; no complete remote copy to repair from")
            continue
        changed = remote_fingerprint(remote, inputs.prefix) != installed_fp
        if changed:
            plan.drift.append(version)
        if inputs.failed_versions.get((name, version)) == remote_fingerprint(remote, inputs.prefix):
            continue
        if changed and inputs.failed.is_failed(name, version, installed_fp):
            plan.replace.append(version)
        elif local.broken and not changed:
            plan.problems.append(f"version {version}: {local.broken}; re-downloading")
            plan.replace.append(version)
        elif local.broken:
            plan.problems.append(f"version {version}: {local.broken}; bucket bytes changed too (drift)")
