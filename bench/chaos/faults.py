"""The seeded fault schedule and the injectors: each fault is injected, held, then healed; one at a time.

Kinds: kill -9 of a process (puller, config_manager, model server, master; restarted by the Supervisor
after Swarm's restart delay), fake GCS killed then restarted, GCS answering 503, GCS blackholed (the
proxy), node-1's model volume full while a new version is published, the namespaced node partitioned
(its veth link down), a corrupt version published (then a good one after it), and a state-document
edit (master's admin API pins the previous version, then the pin is removed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.fleet import ChaosFleet, Supervisor
from bench.chaos.invariants import Watcher, Window
from bench.chaos.versions import corrupt_copy, wait_version
from services.local_fleet.fleet import Node
from tests.remote_model_puller.proxy import Misbehaviour
from tests.support.faults import NetnsNode

logger = logging.getLogger("chaos.faults")

MODEL = "ranker"  # gets the rollouts, corrupt versions and pins
STATIC_MODEL = "embedder"  # one version all along: must never leave any config
KILLS = ("kill puller", "kill config_manager", "kill model server", "kill master", "gcs killed")
KINDS = (*KILLS, "gcs 503", "gcs blackhole", "volume full", "partition", "corrupt version", "state edit")
ROLE = {"kill master": "master", "gcs killed": "gcs"}
ROLE_ON_NODE = {"kill puller": "puller", "kill config_manager": "config_manager", "kill model server": "serving"}
FILLER = ".chaos-filler"


@dataclass
class Event:
    kind: str
    target: str
    hold: float
    gap: float
    publish: bool  # a rollout starts as the fault hits
    injected_at: float = 0.0
    healed_at: float = 0.0
    published: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "injected_at": round(self.injected_at, 2),
            "healed_at": round(self.healed_at, 2),
            "published": self.published,
        }


def schedule(
    rng: random.Random,
    nodes: list[str],
    *,
    hold: tuple[float, float],
    gap: tuple[float, float],
    first: tuple[str, ...] = (),
) -> Iterator[Event]:
    """Endless rounds of every kind in a seeded random order (each kind once per round; ``first`` leads)."""
    while True:
        kinds = rng.sample(KINDS, len(KINDS))
        kinds.sort(key=lambda kind: kind not in first)
        first = ()
        for kind in kinds:
            target = "master" if kind == "kill master" else "gcs" if kind.startswith("gcs") else rng.choice(nodes)
            if kind == "volume full":
                target = nodes[0]  # the node whose volume is a small tmpfs
            elif kind == "partition":
                target = nodes[-1]  # the node inside the network namespace
            elif kind in ("corrupt version", "state edit"):
                target = MODEL
            yield Event(kind, target, rng.uniform(*hold), rng.uniform(*gap), rng.random() < 0.5)


class Injector:
    """Applies events to the fleet; records who is out of service (windows) for invariant 1."""

    def __init__(
        self,
        *,
        fleet: ChaosFleet,
        rules: Misbehaviour,
        supervisor: Supervisor,
        watcher: Watcher,
        models_dir: Path,
        writer: subprocess.Popen[bytes],
        clock_zero: float,
        restart_delay: float,
    ) -> None:
        self.fleet = fleet
        self.rules = rules
        self.supervisor = supervisor
        self.watcher = watcher
        self.models_dir = models_dir
        self.writer = writer
        self.clock_zero = clock_zero
        self.restart_delay = restart_delay
        self.windows: list[Window] = []
        self.corrupt: set[tuple[str, int]] = set()
        self.good = {MODEL: 1, STATIC_MODEL: 1}
        self.latest = 1

    def now(self) -> float:
        return time.monotonic() - self.clock_zero

    def node(self, hostname: str) -> Node:
        return next(n for n in self.fleet.nodes if n.hostname == hostname)

    def publish_good(self, event: Event) -> None:
        self.latest += 1
        version_dir = wait_version(self.models_dir, MODEL, self.latest, self.writer, timeout=300)
        self.fleet.publish(MODEL, version_dir)
        self.good[MODEL] = self.latest
        event.published.append(f"{MODEL}/{self.latest}")
        logger.info("published %s/%s", MODEL, self.latest)

    def run(self, event: Event) -> None:
        """Inject, hold, heal (the publish of a rollout goes first, while the bucket answers)."""
        inject, heal = self._actions(event)
        if event.publish and event.kind not in ("volume full", "corrupt version"):
            self.publish_good(event)
        event.injected_at = self.now()
        logger.info("inject %s on %s (hold %.1fs)", event.kind, event.target, event.hold)
        inject()
        time.sleep(event.hold)
        heal()
        event.healed_at = self.now()
        logger.info("healed %s on %s after %.1fs", event.kind, event.target, event.healed_at - event.injected_at)

    def _actions(self, event: Event) -> tuple[Callable[[], None], Callable[[], None]]:
        kind = event.kind
        if kind in KILLS:
            name = ROLE.get(kind) or f"{event.target}/{ROLE_ON_NODE[kind]}"
            return lambda: self._kill(name, event.target, kind), self._until_restarted
        if kind == "gcs 503":
            return lambda: setattr(self.rules, "fail_all", 503), lambda: setattr(self.rules, "fail_all", None)
        if kind == "gcs blackhole":
            return lambda: setattr(self.rules, "blackhole", True), lambda: setattr(self.rules, "blackhole", False)
        if kind == "volume full":
            node = self.node(event.target)
            return lambda: self._fill_and_publish(node, event), lambda: empty_volume(node.model_dir)
        if kind == "partition":
            node = self.node(event.target)
            assert isinstance(node, NetnsNode) and node.namespace is not None
            namespace = node.namespace
            return lambda: self._partition(node.hostname, namespace.cut), namespace.restore
        if kind == "corrupt version":
            return lambda: self._publish_corrupt(event), lambda: self.publish_good(event)
        if kind == "state edit":
            pin = {"pinned": [self._previous_good()]}
            return lambda: self._set_policy(event, pin), lambda: self._set_policy(event, {})
        raise ValueError(f"unknown fault kind {kind!r}")

    def _kill(self, name: str, hostname: str, kind: str) -> None:
        if kind == "kill model server":
            self.watcher.not_ready(hostname)
            self.windows.append(Window(hostname, "server down", self.now()))
        self.supervisor.kill(name)

    def _fill_and_publish(self, node: Node, event: Event) -> None:
        fill_volume(node.model_dir)
        self.publish_good(event)

    def _until_restarted(self) -> None:
        """Heal = the supervisor's restart (Swarm's delay), waited for, bounded."""
        deadline = time.monotonic() + self.restart_delay + 60
        while not self.supervisor.settled() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _partition(self, hostname: str, cut: Callable[[], None]) -> None:
        self.windows.append(Window(hostname, "partitioned", self.now()))
        cut()

    def _publish_corrupt(self, event: Event) -> None:
        self.latest += 1
        good = wait_version(self.models_dir, MODEL, self.latest, self.writer, timeout=300)
        version_dir = corrupt_copy(good, self.models_dir / "corrupt" / str(self.latest))
        self.fleet.publish(MODEL, version_dir)
        self.corrupt.add((MODEL, self.latest))
        event.published.append(f"{MODEL}/{self.latest} (corrupt)")
        logger.info("published corrupt %s/%s", MODEL, self.latest)

    def _previous_good(self) -> int:
        good = [v for v in range(1, self.good[MODEL]) if (MODEL, v) not in self.corrupt]
        return good[-1] if good else self.good[MODEL]

    def _set_policy(self, event: Event, policy: dict[str, Any]) -> None:
        """PUT the model's overrides through master's admin API; retried while master restarts (bounded)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.fleet.admin(timeout=10) as admin:
                    # An operator's deliberate edit: If-Match "*" overwrites whatever generation is there.
                    response = admin.put(f"/v1/models/{MODEL}", json=policy, headers={"If-Match": "*"})
                response.raise_for_status()
                event.published.append(f"policy {policy or 'default'}")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)


def fill_volume(volume: Path) -> None:
    """Fill a filesystem to the brim: one preallocated file, then 4 KiB writes until ENOSPC (unbuffered)."""
    stat = os.statvfs(volume)
    fd = os.open(volume / FILLER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)


def empty_volume(volume: Path) -> None:
    (volume / FILLER).unlink(missing_ok=True)
