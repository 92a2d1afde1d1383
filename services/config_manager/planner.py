"""The heart of config_manager: what models.config should say next. Pure functions, no I/O.

Inputs per model: the target of desired.json (or None when the model is absent from it), the
versions on disk, the versions recorded as failed (same bytes), tfserving's live states, the entry of
the config applied now, and the known input signatures. Output: the next entry (or None: not in the
config), the changes held back and notes for status.

The rules (DESIGN.md, "Rules learned the hard way"):
- always ``specific`` versions: ``serve`` ∩ on disk minus failed;
- never empty by accident: what is in the config now stays until every wanted version is AVAILABLE,
  a model absent from desired.json stays as it is, only ``enabled: false`` retires a model;
- labels in two steps: a label points only at an AVAILABLE version, and moves only once the new
  version is AVAILABLE and its input signature matches the version the label leaves;
- a wanted version waiting for its golden check (``vetting``) stays out like a failed one until it passed;
- a wanted version whose input signature differs from the version it replaces is held (left out of
  the config, so it never captures "latest" traffic) unless ``allow_signature_change``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.common.contracts import HeldChange, LocalModelTarget
from services.common.tfs import ModelEntry, VersionState
from services.config_manager.signatures import InputSignature, signature_change


@dataclass(frozen=True)
class ModelObservation:
    """Everything the planner knows about one model at the start of a step."""

    name: str
    base_path: str
    target: LocalModelTarget | None
    on_disk: frozenset[int]
    failed: Mapping[int, str] = field(default_factory=dict)
    live: Mapping[int, VersionState] | None = None
    current: ModelEntry | None = None
    signatures: Mapping[int, InputSignature] = field(default_factory=dict)
    cooling: frozenset[int] = frozenset()
    #: Versions that may not serve yet: their golden check has not passed (version -> why).
    vetting: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelPlan:
    """The next models.config entry of one model, and why it is not (yet) the target."""

    name: str
    entry: ModelEntry | None
    held: tuple[HeldChange, ...] = ()
    notes: tuple[str, ...] = ()
    settled: bool = True
    waits_for_readd: bool = False

    @property
    def versions(self) -> frozenset[int]:
        return frozenset(self.entry.versions) if self.entry else frozenset()


def available_versions(live: Mapping[int, VersionState] | None) -> frozenset[int]:
    """Versions tfserving reports AVAILABLE now ("loaded" means AVAILABLE now)."""
    return frozenset(v for v, state in (live or {}).items() if state == VersionState.AVAILABLE)


def _current_versions(obs: ModelObservation, available: frozenset[int]) -> set[int]:
    if obs.current is None:
        return set()
    if obs.current.versions:
        return set(obs.current.versions)
    # A hand-written `latest` entry: what it serves now is what is AVAILABLE.
    return set(available & obs.on_disk)


def _entry(obs: ModelObservation, versions: Iterable[int], labels: Mapping[str, int]) -> ModelEntry | None:
    chosen = tuple(sorted(versions))
    if not chosen:
        return None
    return ModelEntry(name=obs.name, base_path=obs.base_path, versions=chosen, labels=dict(labels))


def plan_model(obs: ModelObservation) -> ModelPlan:
    """The next entry for one model (see the module docstring for the rules)."""
    available = available_versions(obs.live)
    current = _current_versions(obs, available)
    usable_current = {v for v in current if v in obs.on_disk and v not in obs.failed}
    current_labels = dict(obs.current.labels) if obs.current else {}
    if obs.target is None:
        return _plan_absent(obs, usable_current or (current & available & obs.on_disk), available, current_labels)
    if not obs.target.enabled:
        return ModelPlan(obs.name, None, notes=("retired: enabled is false in desired.json",))
    return _plan_target(obs, obs.target, usable_current, available, current_labels)


def _plan_absent(
    obs: ModelObservation, keep: set[int], available: frozenset[int], current_labels: Mapping[str, int]
) -> ModelPlan:
    if not keep:
        return ModelPlan(obs.name, None)
    labels = {label: v for label, v in current_labels.items() if v in keep and v in available}
    note = "not in desired.json: kept as it is (only enabled: false retires a model)"
    return ModelPlan(obs.name, _entry(obs, keep, labels), notes=(note,), settled=keep <= available)


def _plan_target(
    obs: ModelObservation,
    target: LocalModelTarget,
    usable_current: set[int],
    available: frozenset[int],
    current_labels: Mapping[str, int],
) -> ModelPlan:
    notes: list[str] = []
    held: list[HeldChange] = []
    want: set[int] = set()
    cooling = False
    for version in target.serve:
        if version in obs.failed:
            notes.append(f"version {version} failed to load: {obs.failed[version]}")
        elif version not in obs.on_disk:
            notes.append(f"version {version} is not on disk yet")
        elif version in obs.vetting:
            notes.append(f"version {version}: {obs.vetting[version]}")
        elif version in obs.cooling and version not in usable_current:
            notes.append(f"version {version} left the config a moment ago; added back after tfserving's next poll")
            cooling = True
        else:
            want.add(version)
    old = usable_current - want
    # Compare with what callers use now: the newest old version that serves (else the newest old one).
    reference = max(old & available or old) if old else None
    accepted: set[int] = set()
    unchecked = False
    for version in sorted(want):
        verdict = _compare(obs, target, reference, version, available)
        if verdict is None:
            accepted.add(version)
        elif verdict.startswith("unchecked:"):
            accepted.add(version)
            unchecked = True
            notes.append(f"version {version}: {verdict}")
        else:
            held.append(HeldChange(version=version, reason=verdict, kind="signature-changed"))
    pending = accepted - available
    ready = bool(accepted) and not pending and not unchecked
    versions = set(accepted) if ready else accepted | old
    if not old & available:
        # Nothing old serves: a held version that serves now stays (never empty by accident).
        versions |= {h.version for h in held} & usable_current & available
    if pending:
        notes.append("waiting for AVAILABLE: " + ", ".join(str(v) for v in sorted(pending)))
    if not accepted and old:
        notes.append("no wanted version can serve: what serves now stays")
    labels = _plan_labels(obs, target, versions, available, current_labels, held, notes)
    entry = _entry(obs, versions, labels)
    settled = ready and versions == accepted and labels == {k: v for k, v in target.labels.items() if v in accepted}
    return ModelPlan(
        obs.name,
        entry,
        held=tuple(held),
        notes=tuple(notes),
        settled=settled and not held and not cooling,
        waits_for_readd=cooling,
    )


def _compare(
    obs: ModelObservation, target: LocalModelTarget, reference: int | None, version: int, available: frozenset[int]
) -> str | None:
    """None (go), "unchecked: ..." (wait and keep the old one) or the held reason."""
    if reference is None or target.allow_signature_change:
        return None
    new = obs.signatures.get(version)
    if new is None:
        if version in available:
            return f"unchecked: input signature not read yet (compared with version {reference})"
        return None  # still loading: checked once AVAILABLE, the old version stays meanwhile
    old = obs.signatures.get(reference)
    if old is None:
        return f"unchecked: input signature of version {reference} (serving now) not known yet"
    change = signature_change(old, new)
    if change is None:
        return None
    return f"{change} (version {reference} keeps serving; set allow_signature_change to accept)"


def _plan_labels(
    obs: ModelObservation,
    target: LocalModelTarget,
    versions: set[int],
    available: frozenset[int],
    current_labels: Mapping[str, int],
    held: list[HeldChange],
    notes: list[str],
) -> dict[str, int]:
    """Labels for the next entry; may add a version to ``versions`` to keep a label where it is."""
    labels: dict[str, int] = {}
    for label, wanted in sorted(target.labels.items()):
        now = current_labels.get(label)
        move_ok, why = _label_move(obs, target, now, wanted)
        if wanted in versions and wanted in available and move_ok:
            labels[label] = wanted
            continue
        if now is not None and now in available and now in obs.on_disk and now not in obs.failed:
            labels[label] = now
            versions.add(now)
        if why and not any(h.version == wanted for h in held):
            held.append(HeldChange(version=wanted, reason=f"label {label!r} stays on {now}: {why}", kind="label-held"))
        elif wanted not in available or wanted not in versions:
            notes.append(f"label {label!r} waits for version {wanted} to be AVAILABLE")
    return labels


def _label_move(
    obs: ModelObservation, target: LocalModelTarget, now: int | None, wanted: int
) -> tuple[bool, str | None]:
    if now is None or now == wanted or target.allow_signature_change:
        return True, None
    old, new = obs.signatures.get(now), obs.signatures.get(wanted)
    if old is None or new is None:
        return False, None
    change = signature_change(old, new)
    return change is None, change


def plan_config(observations: Iterable[ModelObservation]) -> list[ModelPlan]:
    """Plan every model; the result is sorted by model name (so the rendered config is stable)."""
    return [plan_model(obs) for obs in sorted(observations, key=lambda o: o.name)]


def config_entries(plans: Iterable[ModelPlan]) -> list[ModelEntry]:
    """The models.config entries of ``plans`` (models planned out of the config are left out)."""
    return [plan.entry for plan in plans if plan.entry is not None]
