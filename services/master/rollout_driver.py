"""master's rollout loop: every poll interval, one :func:`~services.master.rollout_steps.advance` per model
under a rollout policy, written to the state document (generation precondition, audited) before any node
acts on it; then the touched nodes are told to sync, so a wave or a revert does not wait a sync interval.

What is only in memory: each wave's traffic window (the counters when master began watching the bake) and
why a rollout waits. Both are rebuilt after a restart; the rest comes back from the document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from services.common.completeness import ModelScan
from services.common.contracts import DesiredStateDocument, ModelPolicy, RolloutPolicy
from services.common.errors import FleetError
from services.common.worker import PeriodicWorker
from services.master.cluster import ClusterView
from services.master.fanout import fan_out
from services.master.fleet import Fleet
from services.master.rollout_gates import NodeFacts
from services.master.rollout_steps import Step, TrafficWindow, advance

logger = logging.getLogger(__name__)

ROLLOUT_ACTOR = "master/rollout"


def node_facts(view: ClusterView, model: str) -> dict[str, NodeFacts]:
    """What the latest polls say about ``model`` on every registered node."""
    facts: dict[str, NodeFacts] = {}
    for node in view.nodes:
        entry = node.models.get(model)
        facts[node.hostname] = NodeFacts(
            healthy=node.healthy,
            available=list(entry.available or []) if entry else [],
            failed=dict(entry.failed) if entry else {},
            capacity=[c.version for c in entry.capacity] if entry else [],
            traffic=entry.traffic if entry else None,
        )
    return facts


class RolloutDriver(PeriodicWorker):
    """Drives every model's rollout from the state document and the cluster view."""

    name = "rollout"

    def __init__(self, fleet: Fleet, *, interval: float) -> None:
        super().__init__(interval=interval, jitter=0.1, max_backoff=interval)
        self.fleet = fleet
        self.waiting_for: dict[str, str] = {}
        self.windows: dict[tuple[str, int, int], TrafficWindow] = {}
        self.document: DesiredStateDocument | None = None

    async def run_once(self, targets: frozenset[str] | None = None) -> None:
        store = self.fleet.store
        document, _ = await store.read_state()
        self.document = document
        if store.guard.alarm is not None:
            return
        names = sorted(n for n in document.models if document.rollout_for(n) is not None)
        if document.rollout is not None:
            names = sorted(set(names) | set((await store.scan()).models))
        view = self.fleet.view()
        hosts = [n.hostname for n in view.nodes if not n.stale]
        for model in names:
            rollout = document.rollout_for(model)
            if rollout is None or (targets is not None and model not in targets):
                continue
            try:
                await self._drive(model, document.policy_for(model), rollout, view=view, hosts=hosts)
            except FleetError as exc:
                logger.warning("rollout of %s: step not written: %s", model, exc, extra={"model": model})
        self._publish_gauges()

    def window(self, model: str, policy: ModelPolicy) -> TrafficWindow | None:
        """The traffic window of the model's current wave, if it bakes."""
        record = policy.rollout_state
        if record is None or record.state != "baking":
            return None
        return self.windows.get((model, record.version, record.wave))

    async def _drive(
        self, model: str, policy: ModelPolicy, rollout: RolloutPolicy, *, view: ClusterView, hosts: list[str]
    ) -> None:
        facts = node_facts(view, model)
        now = datetime.now(UTC)
        scan = await self.fleet.store.scan()
        complete = scan.models[model].complete_versions if model in scan.models else []
        window = self._window_for(model, policy, facts, now)

        def step_on(base: ModelPolicy, model_scan: ModelScan | None) -> Step:
            versions = model_scan.complete_versions if model_scan is not None else complete
            return advance(base, rollout, complete=versions, hosts=hosts, facts=facts, window=window, now=now)

        step = step_on(policy, scan.models.get(model))
        self._note_wait(model, step.waiting_for)
        if step.policy == policy:
            return
        result = await self.fleet.store.change(
            model,
            lambda base, model_scan: step_on(base, model_scan).policy,
            actor=ROLLOUT_ACTOR,
            action=step.action or "rollout targets",
            if_match=None,
            reason=step.reason,
        )
        if not result.changed:
            return
        if step.reverted:
            self.fleet.metrics.rollout_reverts.labels(model=model).inc()
            logger.error("rollout of %s reverted: %s", model, step.reason, extra={"model": model})
        else:
            logger.info("rollout of %s: %s", model, step.action, extra={"model": model})
        await self.sync_nodes(step.touched)

    def _window_for(
        self, model: str, policy: ModelPolicy, facts: dict[str, NodeFacts], now: datetime
    ) -> TrafficWindow | None:
        record = policy.rollout_state
        if record is None or record.state != "baking":
            return None
        key = (model, record.version, record.wave)
        if key not in self.windows:
            counters = {h: f.traffic for h, f in facts.items() if f.healthy and f.traffic is not None}
            self.windows = {k: w for k, w in self.windows.items() if k[0] != model}
            self.windows[key] = TrafficWindow(started_at=now, counters=counters)
        return self.windows[key]

    def _note_wait(self, model: str, waiting_for: str | None) -> None:
        if waiting_for is None:
            self.waiting_for.pop(model, None)
        elif self.waiting_for.get(model) != waiting_for:
            logger.info("rollout of %s waits: %s", model, waiting_for, extra={"model": model})
            self.waiting_for[model] = waiting_for

    async def sync_nodes(self, hosts: Sequence[str]) -> None:
        """Tell the touched nodes to sync now (best effort: their own sync interval is the fallback)."""
        records = [r for host in hosts for r in self.fleet.registry.for_host(host)]
        if not records:
            return
        await fan_out(
            "sync",
            records,
            self.fleet.client,
            node_timeout=self.fleet.settings.node_timeout_seconds,
            concurrency=self.fleet.settings.poll_concurrency,
            is_healthy=self.fleet.is_healthy,
        )

    def _publish_gauges(self) -> None:
        document = self.document
        active = 0
        if document is not None:
            active = sum(1 for p in document.models.values() if p.rollout_state is not None and p.rollout_state.active)
        self.fleet.metrics.rollouts_active.set(active)
