"""The invariants the chaos must not break, checked while it runs and after.

1. calls fail only to a node whose model server is down (killed, until it answers again) or that is cut
   off (partition, until it answers again): :func:`attribute` gives every failed call its cause;
2. no partial version directory is ever visible under a final name: :class:`Watcher` scans every node's
   volume (a version dir has ``saved_model.pb``, and ``variables.index`` with every data shard when it
   has variables; once its manifest exists, exactly the manifest's files and sizes);
3. no model is ever absent from a running server's config unless retired: :class:`Watcher` reads every
   node's models.config and asks every ready model server (GetModelStatus) for an AVAILABLE version;
4. everything converges after the chaos: measured by the runner (``converge_seconds``).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.load import Call
from services.common.contracts import Manifest
from services.common.contracts.local import FailedDocument, failed_path, manifest_path
from services.common.errors import TFServingError
from services.common.tfs import TFServingClient, VersionState
from services.local_fleet.fleet import Node

SHARD = re.compile(r"variables\.data-(\d+)-of-(\d+)$")
CONFIG_NAME = re.compile(r'name:\s*"([^"]+)"')


@dataclass
class Window:
    """A node out of service on purpose: from ``start`` until its first answered call after ``start``."""

    node: str
    cause: str  # "server down" | "partitioned"
    start: float
    end: float | None = None


@dataclass
class Violations:
    partial_versions: list[str] = field(default_factory=list)
    config_missing: list[str] = field(default_factory=list)
    status_missing: list[str] = field(default_factory=list)


def close_windows(windows: Sequence[Window], calls: Sequence[Call]) -> None:
    """End each open window at its node's first answered call that started after the window opened."""
    answered: dict[str, list[float]] = {}
    for call in calls:
        if call.code is None:
            answered.setdefault(call.node, []).append(call.start)
    for window in windows:
        starts = sorted(answered.get(window.node, []))
        window.end = next((s for s in starts if s >= window.start), None)


def attribute(call: Call, windows: Sequence[Window], stalls: Sequence[tuple[float, float]] = ()) -> str:
    """Why ``call`` failed: the cause of a window it overlaps on its node; ``client stalled`` for a missed
    deadline while the client itself could not run; else ``unexplained <code>`` (invariant 1 broken)."""
    if call.code in ("CORRUPT_VERSION_SERVED", "WRONG_ANSWER"):
        return f"unexplained {call.code}"
    for w in windows:
        if w.node == call.node and call.end >= w.start and (w.end is None or call.start <= w.end):
            return w.cause
    if call.code == "DEADLINE_EXCEEDED" and any(call.start <= s + d and s <= call.end for s, d in stalls):
        return "client stalled"
    return f"unexplained {call.code}"


def failures_by_cause(
    calls: Sequence[Call], windows: Sequence[Window], stalls: Sequence[tuple[float, float]]
) -> dict[str, Counter[str]]:
    """node → cause → failed calls."""
    table: dict[str, Counter[str]] = {}
    for call in calls:
        if call.code is not None:
            table.setdefault(call.node, Counter())[attribute(call, windows, stalls)] += 1
    return table


def partial_version_problems(node: Node) -> list[str]:
    """Version directories under final names that are not whole (vanishing ones, GC'd mid-scan, are fine)."""
    problems: list[str] = []
    for model_dir in _entries(node.model_dir):
        if model_dir.name.startswith(".") or not model_dir.is_dir():
            continue
        for entry in _entries(model_dir):
            problem = _version_problem(node.model_dir, model_dir.name, entry)
            if problem is not None and entry.exists():
                problems.append(f"{node.hostname}:{model_dir.name}/{entry.name}: {problem}")
    return problems


def _entries(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _version_problem(root: Path, model: str, entry: Path) -> str | None:
    if not entry.name.isdigit() or str(int(entry.name)) != entry.name:
        return "not a canonical version directory"
    try:
        files = {p.relative_to(entry).as_posix(): p.stat().st_size for p in entry.rglob("*") if p.is_file()}
    except FileNotFoundError:
        return None  # removed while scanned (GC renames into trash)
    mpath = manifest_path(root, model, int(entry.name))
    if mpath.is_file():
        try:
            manifest = Manifest.read(mpath)
        except (OSError, ValueError):
            return None  # being replaced right now; the next scan reads it
        expected = {o.name: o.size for o in manifest.objects if not o.name.endswith("/")}
        for name in manifest.generated:  # a generated warm-up file is the fleet's, not the bucket's
            files.pop(name, None)
        return None if files == expected else f"files {sorted(files.items())} != manifest {sorted(expected.items())}"
    if not any(name in files for name in ("saved_model.pb", "saved_model.pbtxt")):
        return f"no saved_model.pb: {sorted(files)}"
    shards = [SHARD.search(name) for name in files if name.startswith("variables/")]
    found = [m for m in shards if m]
    if found and "variables/variables.index" not in files:
        return "variables.index missing"
    if found and len(found) != int(found[0].group(2)):
        return f"{len(found)} of {found[0].group(2)} variable shards"
    return None


class Watcher:
    """Scans volumes and configs, polls model servers, every ``interval`` seconds, in its own thread.

    Start it once every node serves every model: from then on each models.config must name them all.
    """

    def __init__(self, nodes: Sequence[Node], models: Sequence[str], *, interval: float = 0.5) -> None:
        self.nodes = list(nodes)
        self.models = list(models)
        self.interval = interval
        self.violations = Violations()
        self.scans = 0
        #: (model, version) → hostnames whose failed.json recorded it (corrupt versions should be there).
        self.recorded_failed: dict[tuple[str, int], set[str]] = {}
        #: hostname → ready: the server answered with every model AVAILABLE since its last (re)start.
        self.ready: dict[str, bool] = {n.hostname: False for n in nodes}
        self._epoch: Counter[str] = Counter()  # bumped by not_ready: an answer from before does not count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def not_ready(self, hostname: str) -> None:
        """The chaos is about to take ``hostname``'s server away: GetModelStatus gaps are expected until ready."""
        self._epoch[hostname] += 1
        self.ready[hostname] = False

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="invariant-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Violations:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._error is not None:
            raise RuntimeError("invariant watcher crashed") from self._error
        return self.violations

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    async def _main(self) -> None:
        clients = {n.hostname: TFServingClient(n.grpc_target) for n in self.nodes}
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                for node in self.nodes:
                    self.violations.partial_versions += partial_version_problems(node)
                    self._check_config(node)
                    self._read_failed(node)
                    await self._check_status(node, clients[node.hostname])
                self.scans += 1
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            for client in clients.values():
                await client.close()

    def _read_failed(self, node: Node) -> None:
        try:
            document = FailedDocument.read(failed_path(node.model_dir))
        except (OSError, ValueError):
            return  # absent yet, or on a volume the chaos filled: the next scan reads it
        for entry in document.versions:
            self.recorded_failed.setdefault((entry.model, entry.version), set()).add(node.hostname)

    def _check_config(self, node: Node) -> None:
        try:
            names = set(CONFIG_NAME.findall(node.config_file.read_text()))
        except FileNotFoundError:
            names = set()
        for model in sorted(set(self.models) - names):
            self.violations.config_missing.append(f"{node.hostname}: {model} not in models.config")

    async def _check_status(self, node: Node, client: TFServingClient) -> None:
        missing: list[str] = []
        epoch = self._epoch[node.hostname]
        for model in self.models:
            try:
                statuses = await client.get_model_status(model, timeout=1.0)
            except TFServingError as exc:
                if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"):
                    return  # down or cut off: invariant 1 accounts for it
                missing.append(f"{model}: {exc.code}")
                continue
            if not any(s.state == VersionState.AVAILABLE for s in statuses):
                missing.append(f"{model}: no AVAILABLE version ({[(s.version, s.state.name) for s in statuses]})")
        if not missing:
            if epoch == self._epoch[node.hostname]:
                self.ready[node.hostname] = True
        elif self.ready[node.hostname]:
            self.violations.status_missing += [f"{node.hostname}: {m}" for m in missing]
