"""Notice changes of desired.json, the model directories and manifests, and trigger a reconcile.

Polling ``stat`` of a few dozen paths each second costs little and needs no inotify (the model
volume may be a network or overlay filesystem where inotify is unreliable).
"""

from __future__ import annotations

import os
from pathlib import Path

from services.common.contracts.base import is_valid_model_name
from services.common.contracts.local import desired_path, fleet_dir
from services.common.worker import PeriodicWorker


def volume_signature(local_root: Path) -> tuple[tuple[str, int], ...]:
    """mtimes of desired.json, the volume root, each model directory and each manifests directory."""
    paths = [desired_path(local_root), local_root, fleet_dir(local_root) / "manifests"]
    try:
        with os.scandir(local_root) as entries:
            paths.extend(Path(e.path) for e in entries if is_valid_model_name(e.name) and e.is_dir())
    except OSError:
        pass
    found: list[tuple[str, int]] = []
    for path in paths:
        try:
            found.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            found.append((str(path), -1))
    return tuple(sorted(found))


class VolumeWatcher(PeriodicWorker):
    """Calls ``on_change`` when :func:`volume_signature` changes (not on the first look)."""

    name = "config_manager.watch"

    def __init__(self, local_root: Path, worker: PeriodicWorker, *, interval: float) -> None:
        super().__init__(interval=interval, jitter=0.0)
        self.local_root = local_root
        self.worker = worker
        self._last: tuple[tuple[str, int], ...] | None = None

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        """Compare the volume's signature with the last one; trigger the reconciler on a change."""
        current = volume_signature(self.local_root)
        if self._last is not None and current != self._last:
            self.worker.trigger()
        self._last = current
