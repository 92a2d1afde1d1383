"""``LOCAL/.fleet/puller-bad-downloads.json``: versions whose bytes could not be verified, kept across
restarts (on the volume, so also across replaced containers) so that a known-bad gigabyte is not fetched
again until its generations change. Private to the puller:
``{"versions": [{"model", "version", "fingerprint", "reason"}]}``, written atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from services.common.atomic import atomic_write_json
from services.common.contracts.local import fleet_dir

logger = logging.getLogger(__name__)

FILE_NAME = "puller-bad-downloads.json"
Key = tuple[str, int]


def path_for(local_root: Path) -> Path:
    return fleet_dir(local_root) / FILE_NAME


def load(path: Path) -> dict[Key, tuple[str, str]]:
    """(model, version) → (fingerprint, reason); empty when absent. An unreadable file is ignored with a
    warning: the cost is at most one more download attempt per version."""
    try:
        entries = json.loads(path.read_text())["versions"]
        return {(str(e["model"]), int(e["version"])): (str(e["fingerprint"]), str(e["reason"])) for e in entries}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return {}


def save(path: Path, fingerprints: Mapping[Key, str], reasons: Mapping[Key, str]) -> None:
    """Write the file; a failure (full disk) is logged, the marks stay in memory."""
    entries = [
        {"model": m, "version": v, "fingerprint": fp, "reason": reasons.get((m, v), "")}
        for (m, v), fp in sorted(fingerprints.items())
    ]
    try:
        atomic_write_json(path, {"versions": entries})
    except OSError as exc:
        logger.error("could not record failed downloads: %s", exc)
