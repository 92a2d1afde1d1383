"""master's metrics, on a per-app registry: its own counters plus the fleet re-exported from poll results.

The fleet gauges come from a custom Collector reading the latest poll results at scrape time, so one
Prometheus scrape of master sees every node without master keeping a second copy of the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.master.cluster import ClusterView


class MasterMetrics:
    """master's own metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter("modelfleet_master_polls_total", "Sidecar status polls", ["result"], registry=registry)
        self.poll_duration = Histogram(
            "modelfleet_master_poll_duration_seconds",
            "Duration of one sidecar status poll",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=registry,
        )
        self.registrations = Counter(
            "modelfleet_master_registrations_total", "Registrations and heartbeats", ["role"], registry=registry
        )
        self.operations = Counter(
            "modelfleet_master_operations_total", "Cluster/node operations", ["operation", "result"], registry=registry
        )
        self.rollout_reverts = Counter(
            "modelfleet_master_rollout_reverts_total",
            "Rollouts reverted by a failed gate (alarm: the version is marked bad fleet-wide)",
            ["model"],
            registry=registry,
        )
        self.rollouts_active = Gauge(
            "modelfleet_master_rollouts_in_progress", "Rollouts running, baking, waiting or paused", registry=registry
        )


class FleetCollector(Collector):
    """Re-exports node health, AVAILABLE versions and convergence from the latest cluster view."""

    def __init__(self, view: Callable[[], ClusterView]) -> None:
        self._view = view

    def collect(self) -> Iterable[Metric]:
        view = self._view()
        up = GaugeMetricFamily(
            "modelfleet_master_sidecar_up", "1 when the sidecar is healthy (debounced)", labels=["hostname", "role"]
        )
        failures = GaugeMetricFamily(
            "modelfleet_master_sidecar_consecutive_poll_failures",
            "Consecutive failed status polls",
            labels=["hostname", "role"],
        )
        stale = GaugeMetricFamily(
            "modelfleet_master_sidecar_stale", "1 when the sidecar stopped registering", labels=["hostname", "role"]
        )
        node_up = GaugeMetricFamily(
            "modelfleet_master_node_up", "1 when every sidecar of the node is healthy", labels=["hostname"]
        )
        available = GaugeMetricFamily(
            "modelfleet_master_node_model_available_versions",
            "Number of AVAILABLE versions of a model on a node",
            labels=["hostname", "model"],
        )
        newest = GaugeMetricFamily(
            "modelfleet_master_node_model_newest_available_version",
            "Highest AVAILABLE version of a model on a node (absent when none)",
            labels=["hostname", "model"],
        )
        node_converged = GaugeMetricFamily(
            "modelfleet_master_node_model_converged",
            "1 when the node serves what it should",
            labels=["hostname", "model"],
        )
        capacity = GaugeMetricFamily(
            "modelfleet_master_node_model_capacity_waiting_versions",
            "Versions of a model that do not fit in a node's tfserving memory (alarm when > 0)",
            labels=["hostname", "model"],
        )
        model_converged = GaugeMetricFamily(
            "modelfleet_master_model_converged", "1 when every healthy node serves what it should", labels=["model"]
        )
        for node in view.nodes:
            node_up.add_metric([node.hostname], float(node.healthy))
            for role, sidecar in node.sidecars.items():
                up.add_metric([node.hostname, role], float(sidecar.healthy))
                failures.add_metric([node.hostname, role], float(sidecar.consecutive_failures))
                stale.add_metric([node.hostname, role], float(sidecar.stale))
            for model, entry in node.models.items():
                versions = entry.available or []
                available.add_metric([node.hostname, model], float(len(versions)))
                if versions:
                    newest.add_metric([node.hostname, model], float(max(versions)))
                node_converged.add_metric([node.hostname, model], float(entry.converged))
                capacity.add_metric([node.hostname, model], float(len(entry.capacity)))
        for model, summary in view.models.items():
            model_converged.add_metric([model], float(summary.converged))
        fleet = GaugeMetricFamily("modelfleet_master_fleet_converged", "1 when every model is converged")
        fleet.add_metric([], float(view.converged))
        nodes = GaugeMetricFamily("modelfleet_master_nodes", "Registered nodes by health", labels=["state"])
        nodes.add_metric(["healthy"], float(view.nodes_healthy))
        nodes.add_metric(["unhealthy"], float(view.nodes_total - view.nodes_healthy))
        yield from (up, failures, stale, node_up, available, newest, node_converged, capacity, model_converged)
        state_alarm = GaugeMetricFamily(
            "modelfleet_master_state_document_alarm",
            "1 while the desired-state document is missing or reset and the last good one rules",
            labels=["kind"],
        )
        for kind in ("desired-state-missing", "desired-state-reset"):
            state_alarm.add_metric([kind], float(view.state_alarm is not None and view.state_alarm.kind == kind))
        yield from (fleet, nodes, state_alarm)
