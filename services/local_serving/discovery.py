"""Version discovery, like FileSystemStoragePathSource: which versions of a model are aspired now."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from services.local_serving.config import ModelSource

logger = logging.getLogger(__name__)

_INT64_MAX = 2**63 - 1
# absl::SimpleAtoi: optional surrounding whitespace and sign, decimal digits; leading zeros are fine.
_VERSION_RE = re.compile(r"\s*[+-]?[0-9]+\s*")


class BasePathMissing(Exception):
    """A model's base_path does not exist: the whole poll is dropped (TF Serving #2189)."""


def parse_version(child: str) -> int | None:
    """The int64 version a directory entry names, or None (``007`` -> 7, ``1.tmp``/``v2`` -> None)."""
    if not _VERSION_RE.fullmatch(child):
        return None
    value = int(child)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def list_versions(source: ModelSource) -> dict[int, Path]:
    """All numeric children of the base path ({version: path}); the first spelling of a duplicate wins."""
    base = Path(source.base_path)
    try:
        children = sorted(os.listdir(base))
    except FileNotFoundError as exc:
        raise BasePathMissing(source.base_path) from exc
    except NotADirectoryError as exc:
        raise BasePathMissing(source.base_path) from exc
    versions: dict[int, Path] = {}
    for child in children:
        version = parse_version(child)
        if version is None:
            continue
        if version in versions:
            logger.warning(
                "Found multiple directories for version %s of servable %s; using %s",
                version,
                source.name,
                versions[version],
                extra={"model": source.name, "version": version},
            )
            continue
        versions[version] = base / child
    return versions


def aspired_versions(source: ModelSource) -> dict[int, Path]:
    """Apply the version policy to what is on disk. Raises BasePathMissing."""
    present = list_versions(source)
    if not present:
        logger.warning(
            "No versions of servable %s found under base path %s",
            source.name,
            source.base_path,
            extra={"model": source.name},
        )
        return {}
    policy = source.policy
    if policy.kind == "all":
        return present
    if policy.kind == "specific":
        for version in sorted(policy.versions - set(present)):
            logger.warning(
                "Version %s of servable %s, which was requested to be served as a 'specific' version "
                "in the servable's version policy, was not found in the file system",
                version,
                source.name,
                extra={"model": source.name, "version": version},
            )
        return {version: path for version, path in present.items() if version in policy.versions}
    newest = sorted(present, reverse=True)[: policy.num_versions]
    return {version: present[version] for version in newest}


def poll_versions(sources: dict[str, ModelSource]) -> dict[str, dict[int, Path]] | None:
    """One FileSystemStoragePathSource poll over every model, or None when the poll is dropped.

    Upstream (PollFileSystemForConfig) returns at the first error, so one missing base path or one
    listing error (EIO, EACCES, a directory vanishing mid-listing) drops the poll for ALL models.
    """
    found: dict[str, dict[int, Path]] = {}
    for name, source in sources.items():
        try:
            found[name] = aspired_versions(source)
        except BasePathMissing:
            logger.error(
                "FileSystemStoragePathSource encountered a filesystem access error: Could not find base path %s "
                "for servable %s",
                source.base_path,
                name,
                extra={"model": name},
            )
            return None
        except OSError as exc:
            logger.error(
                "FileSystemStoragePathSource encountered a filesystem access error: %s",
                exc,
                extra={"model": name},
            )
            return None
    return found
