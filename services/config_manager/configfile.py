"""models.config on disk: read at start, lint before writing, write only on change, put back hand edits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.common.atomic import atomic_write_text
from services.common.errors import ConfigLintError
from services.common.tfs import ModelEntry, lint_config, parse_config
from services.config_manager.metrics import Metrics
from services.config_manager.planner import ModelPlan

logger = logging.getLogger(__name__)


def config_hash(text: str) -> str:
    """Short content hash of a models.config text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigFile:
    """The models.config config_manager owns (``TENSORFLOW_SERVING_CONFIG_FILE``)."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self.written_text: str | None = None

    def entries_at_start(self) -> list[ModelEntry]:
        """What tfserving was started from (nothing if the file is not usable)."""
        try:
            return parse_config(self.path.read_text(encoding="utf-8"))
        except (OSError, ConfigLintError) as exc:
            logger.warning("models.config at start is not usable, starting from nothing: %s", exc)
            return []

    def write(self, text: str) -> None:
        """Write ``text`` atomically if the file differs; a file changed by someone else is put back."""
        try:
            on_file: str | None = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            on_file = None
        if self.written_text is not None and on_file != self.written_text:
            logger.warning(
                "models.config was changed by someone else; putting back what config_manager wrote",
                extra={"path": str(self.path)},
            )
            self.metrics.hand_edits.inc()
        if on_file != text:
            atomic_write_text(self.path, text)
            logger.info("models.config written", extra={"path": str(self.path), "hash": config_hash(text)})
        self.written_text = text


def known_good(entries: Sequence[ModelEntry], available: Mapping[str, frozenset[int]]) -> list[ModelEntry]:
    """What models.config on disk may say: only versions AVAILABLE now, labels only on those.

    TF Serving loads the file on every restart (crash, OOM, reboot, ``docker service update``), so the
    file names only what served: a candidate reaches tfserving through HandleReloadConfigRequest and
    enters the file once it is AVAILABLE. A version that never loaded can never crash-loop a node.
    A hand-written ``latest`` entry (no versions) is kept as it is.
    """
    good: list[ModelEntry] = []
    for entry in entries:
        if not entry.versions:
            good.append(entry)
            continue
        versions = tuple(v for v in entry.versions if v in available.get(entry.name, frozenset()))
        if versions:
            labels = {label: v for label, v in entry.labels.items() if v in versions}
            good.append(ModelEntry(entry.name, entry.base_path, versions, labels, entry.platform))
    return good


def safe_entries(
    plans: Sequence[ModelPlan], current: Mapping[str, ModelEntry]
) -> tuple[list[ModelEntry], dict[str, list[str]]]:
    """Entries that pass lint (disk checks included); a refused entry falls back to the current one."""
    entries: list[ModelEntry] = []
    problems: dict[str, list[str]] = {}
    for plan in plans:
        if plan.entry is None:
            continue
        for candidate in (plan.entry, current.get(plan.name)):
            if candidate is None:
                continue
            try:
                lint_config([candidate])
            except ConfigLintError as exc:
                problems.setdefault(plan.name, []).append(exc.detail)
                logger.error("models.config entry refused: %s", exc.detail, extra={"model": plan.name})
                continue
            entries.append(candidate)
            break
    return entries, problems
