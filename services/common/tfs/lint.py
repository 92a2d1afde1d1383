"""Refuse a models.config before it is written, not after TF Serving chokes on it.

Each rule is a way a real TF Serving breaks (see reference/tf-serving-behaviour.md): duplicate names
and relative base paths are rejected by ReloadConfig; a base_path with no version directory makes a
reload block forever (tensorflow/serving#1565) and stalls the file-system poll of every model; a
label on a version that is not served fails the reload with FAILED_PRECONDITION; an unknown platform
is INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from services.common.errors import ConfigLintError
from services.common.tfs.records import ModelEntry

SUPPORTED_PLATFORM = "tensorflow"
_INT64_MAX = 2**63 - 1
# TF Serving reads a child name as a version with absl::SimpleAtoi: optional sign, digits, int64.
_VERSION_NAME = re.compile(r"[+-]?[0-9]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def version_dirs(base_path: Path) -> dict[int, list[str]]:
    """Version number -> names of the child directories TF Serving would read as that version.

    ``007`` and ``7`` are both version 7; two names for one version is ambiguous (TF Serving keeps
    one of them with only a warning). Files and non-numeric names (``7.tmp``, ``.staging``) do not
    count. Returns ``{}`` if ``base_path`` is not a readable directory.
    """
    found: dict[int, list[str]] = {}
    try:
        children = sorted(base_path.iterdir())
    except OSError:
        return {}
    for child in children:
        if not _VERSION_NAME.fullmatch(child.name) or not child.is_dir():
            continue
        version = int(child.name)
        if -_INT64_MAX - 1 <= version <= _INT64_MAX:
            found.setdefault(version, []).append(child.name)
    return found


def lint_config(entries: Sequence[ModelEntry], *, check_disk: bool = True) -> None:
    """Raise :class:`ConfigLintError` listing every problem of ``entries``; return if there are none.

    Always checked: empty or duplicate names, missing or relative base_path, a platform other than
    ``tensorflow``, a label on a version that is not in ``versions`` (an entry without versions may
    carry no label: under ``latest`` nobody can say which version it lands on). With ``check_disk``
    (the default, for a config about to be written on this node): base_path is an existing directory
    holding at least one version directory, every listed version has exactly one directory on disk.
    The problems are in ``exc.extra["problems"]`` (a list of strings, one per problem).
    """
    problems: list[str] = []
    counts = Counter(entry.name for entry in entries)
    problems.extend(f"duplicate model name {name!r} ({n} entries)" for name, n in counts.items() if n > 1)
    for index, entry in enumerate(entries):
        problems.extend(_entry_problems(index, entry, check_disk=check_disk))
    if problems:
        raise ConfigLintError(
            f"models.config refused, {len(problems)} problem(s): " + "; ".join(problems),
            problems=problems,
        )


def _entry_problems(index: int, entry: ModelEntry, *, check_disk: bool) -> list[str]:
    what = f"model {entry.name!r}" if entry.name else f"model #{index}"
    problems: list[str] = []
    if not entry.name:
        problems.append(f"{what}: empty name")
    if entry.platform != SUPPORTED_PLATFORM:
        problems.append(f"{what}: platform {entry.platform!r} is not {SUPPORTED_PLATFORM!r}")
    for label, version in entry.labels.items():
        if version not in entry.versions:
            problems.append(f"{what}: label {label!r} points at version {version}, which is not served")
    if not entry.base_path:
        problems.append(f"{what}: missing base_path")
        return problems
    is_uri = bool(_URI.match(entry.base_path))
    if not is_uri and not PurePosixPath(entry.base_path).is_absolute():
        problems.append(f"{what}: base_path {entry.base_path!r} is relative")
        return problems
    if check_disk:
        problems.extend(_disk_problems(what, entry, is_uri=is_uri))
    return problems


def _disk_problems(what: str, entry: ModelEntry, *, is_uri: bool) -> list[str]:
    if is_uri:
        return [f"{what}: base_path {entry.base_path!r} is not on local disk and cannot be checked"]
    base_path = Path(entry.base_path)
    if not base_path.is_dir():
        return [f"{what}: base_path {entry.base_path} does not exist (or is not a directory)"]
    on_disk = version_dirs(base_path)
    if not on_disk:
        return [f"{what}: base_path {entry.base_path} has no version directory"]
    problems: list[str] = []
    for version in entry.versions:
        names = on_disk.get(version, [])
        if not names:
            problems.append(f"{what}: version {version} is not on disk under {entry.base_path}")
        elif len(names) > 1:
            problems.append(f"{what}: version {version} has several directories {names} (ambiguous)")
    return problems
