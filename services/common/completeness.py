"""The completeness rule: which versions in a bucket listing are whole and safe to install.

A pure function over an object listing, shared by the puller (what to download) and master (what may be
pinned or labelled). DESIGN.md, "Rules learned the hard way":

- A version is an int64; ``007`` is version 7. Two names for one version (``7`` and ``007``) are
  ambiguous: neither is complete, both are reported.
- In every mode: ``saved_model.pb`` or ``.pbtxt``, and if ``variables.index`` or any data shard exists,
  the index and every ``variables.data-K-of-N`` shard (``-of-N`` says how many; an index with no shard
  is a big shard still uploading). A version with no variables at all needs no shard.
- With a marker object configured, the version is also complete only once the marker exists and no
  other object of the version is newer than it. Otherwise no object of the version may have been
  updated within the quiet period.
- Folder placeholders (names ending in ``/``, or ``_$folder$``) are ignored.
- Names that would escape the version directory (``..``, absolute, control characters, backslashes)
  make the version unsafe: never complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.common.contracts.base import INT64_MAX, is_valid_model_name

SHARD_RE = re.compile(r"^variables/variables\.data-(\d+)-of-(\d+)$")
VERSION_RE = re.compile(r"^[0-9]{1,19}$")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
VARIABLES_INDEX = "variables/variables.index"


@dataclass(frozen=True)
class RemoteObject:
    """One object of a listing. ``name`` is the full object name in the bucket."""

    name: str
    size: int
    generation: int
    updated: datetime
    crc32c: str | None = None


@dataclass
class VersionScan:
    """One version directory of one model."""

    model: str
    version: int
    dir_name: str
    objects: list[RemoteObject] = field(default_factory=list)
    complete: bool = False
    reason: str = ""

    def relative_name(self, obj: RemoteObject, prefix: str) -> str:
        return obj.name[len(prefix) + len(self.model) + 1 + len(self.dir_name) + 1 :]

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


@dataclass
class ModelScan:
    """Every version directory found for one model."""

    name: str
    versions: dict[int, VersionScan] = field(default_factory=dict)
    ambiguous: dict[int, list[str]] = field(default_factory=dict)

    @property
    def complete_versions(self) -> list[int]:
        return sorted(v for v, scan in self.versions.items() if scan.complete)

    @property
    def incomplete(self) -> dict[int, str]:
        found = {v: scan.reason for v, scan in self.versions.items() if not scan.complete}
        found.update({v: f"ambiguous: {', '.join(sorted(names))}" for v, names in self.ambiguous.items()})
        return found


@dataclass
class BucketScan:
    """The result of applying the rule to a whole listing under a models prefix."""

    models: dict[str, ModelScan] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def parse_version(name: str) -> int | None:
    """The int64 version a directory name stands for (leading zeros allowed), or None."""
    if not VERSION_RE.match(name):
        return None
    value = int(name)
    return value if value <= INT64_MAX else None


def canonical_version_name(version: int) -> str:
    """On local disk versions are canonical: ``7``, never ``007``."""
    return str(version)


def is_placeholder(name: str) -> bool:
    """Folder placeholder objects made by consoles and tools."""
    return name.endswith(("/", "_$folder$"))


def is_safe_relative_name(name: str) -> bool:
    """True if ``name`` (relative to a version dir) stays inside it when written to disk."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def check_version(
    relative: dict[str, RemoteObject], *, now: datetime, quiet_period: timedelta, marker: str | None
) -> tuple[bool, str]:
    """Apply the rule to one version's objects (names relative to the version dir)."""
    unsafe = sorted(n for n in relative if not is_safe_relative_name(n))
    if unsafe:
        return False, f"unsafe object names: {unsafe[:3]}"
    if not any(f in relative for f in SAVED_MODEL_FILES):
        return False, "no saved_model.pb or saved_model.pbtxt"
    # Before the marker: a marker written by a tool that does not wait for parallel uploads (or written
    # by hand too early) must not make a version without its variables installable.
    shard_problem = _check_shards(relative)
    if shard_problem:
        return False, shard_problem
    if marker is not None:
        mark = relative.get(marker)
        if mark is None:
            return False, f"marker {marker} not present"
        newer = sorted(n for n, o in relative.items() if n != marker and o.updated > mark.updated)
        if newer:
            return False, f"objects updated after marker {marker}: {newer[:3]}"
        return True, "complete (marker)"
    youngest = max(o.updated for o in relative.values())
    if now - youngest < quiet_period:
        wait = (quiet_period - (now - youngest)).total_seconds()
        return False, f"updated {(now - youngest).total_seconds():.0f}s ago; quiet period ends in {wait:.0f}s"
    return True, "complete"


def _check_shards(relative: dict[str, RemoteObject]) -> str | None:
    """None when variables are absent or whole; otherwise why not."""
    shards = [(n, SHARD_RE.match(n)) for n in relative if n.startswith("variables/variables.data-")]
    if not shards and VARIABLES_INDEX not in relative:
        return None
    if VARIABLES_INDEX not in relative:
        return "variables.index missing"
    totals = set()
    seen: set[int] = set()
    for name, match in shards:
        if match is None:
            return f"unrecognised shard name {name}"
        seen.add(int(match.group(1)))
        totals.add(int(match.group(2)))
    if not totals:
        return "variables.index without data shards"
    if len(totals) > 1:
        return f"shards of different sets: of-{sorted(totals)}"
    total = totals.pop()
    beyond = sorted(k for k in seen if k >= total)
    if beyond:
        return f"shard numbers {beyond[:5]} beyond of-{total}"
    missing = sorted(set(range(total)) - seen)
    if missing or total == 0:
        return f"missing variable shards {missing[:5]} of {total}"
    return None


def scan_listing(
    objects: Iterable[RemoteObject],
    *,
    prefix: str,
    now: datetime,
    quiet_period: timedelta,
    marker: str | None = None,
) -> BucketScan:
    """Group a listing under ``prefix`` into models and versions and apply the rule to each version."""
    scan = BucketScan()
    groups: dict[tuple[str, str], list[RemoteObject]] = {}
    for obj in objects:
        if not obj.name.startswith(prefix) or is_placeholder(obj.name):
            continue
        parts = obj.name[len(prefix) :].split("/", 2)
        if len(parts) < 3:
            continue  # files at the prefix or model level are not versions
        model, dir_name, _rest = parts
        if model.startswith(("_", ".")):
            continue  # reserved (_fleet/, .tmp): never a model
        if not is_valid_model_name(model):
            scan.ignored.append((obj.name, "invalid model name"))
            continue
        if parse_version(dir_name) is None:
            scan.ignored.append((obj.name, "not an int64 version directory"))
            continue
        groups.setdefault((model, dir_name), []).append(obj)
    by_version: dict[tuple[str, int], list[str]] = {}
    for model, dir_name in groups:
        version = parse_version(dir_name)
        assert version is not None
        by_version.setdefault((model, version), []).append(dir_name)
    for (model, version), dir_names in sorted(by_version.items()):
        model_scan = scan.models.setdefault(model, ModelScan(name=model))
        if len(dir_names) > 1:
            model_scan.ambiguous[version] = sorted(dir_names)
            continue
        dir_name = dir_names[0]
        version_scan = VersionScan(model=model, version=version, dir_name=dir_name, objects=groups[(model, dir_name)])
        relative = {version_scan.relative_name(o, prefix): o for o in version_scan.objects}
        version_scan.complete, version_scan.reason = check_version(
            relative, now=now, quiet_period=quiet_period, marker=marker
        )
        model_scan.versions[version] = version_scan
    return scan
