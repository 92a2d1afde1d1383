"""Prometheus metrics of config_manager, on a per-app registry (several apps share a test process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "modelfleet_config_manager"


class Metrics:
    """Every metric config_manager exports; ``registry`` is served at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reloads = Counter(
            f"{PREFIX}_reloads_total",
            "HandleReloadConfigRequest calls by result (ok, deadline = still loading new models, error)",
            ["result"],
            registry=r,
        )
        self.reload_seconds = Histogram(
            f"{PREFIX}_reload_seconds",
            "Time from a reload request until its versions were AVAILABLE or failed (bounded wait)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.reconciles = Counter(f"{PREFIX}_reconciles_total", "Reconcile passes by result", ["result"], registry=r)
        self.failed_loads = Counter(
            f"{PREFIX}_failed_loads_total", "Versions that failed to load (recorded in failed.json)", registry=r
        )
        self.failed_versions = Gauge(
            f"{PREFIX}_failed_versions", "Versions on disk recorded as failed with their current bytes", registry=r
        )
        self.versions_available = Gauge(
            f"{PREFIX}_versions_available", "Versions of models.config that tfserving reports AVAILABLE", registry=r
        )
        self.versions_in_config = Gauge(f"{PREFIX}_versions_in_config", "Versions listed in models.config", registry=r)
        self.held_changes = Gauge(
            f"{PREFIX}_held_changes", "Changes held back (e.g. input signature changed)", registry=r
        )
        self.capacity_waiting = Gauge(
            f"{PREFIX}_capacity_waiting_versions",
            "Versions that did not fit in tfserving's memory and wait for memory (alarm when > 0)",
            registry=r,
        )
        self.capacity_failures = Counter(
            f"{PREFIX}_capacity_failures_total", "Loads that ended RESOURCE_EXHAUSTED (out of memory)", registry=r
        )
        self.free_disk_bytes = Gauge(f"{PREFIX}_free_disk_bytes", "Free bytes on the model volume", registry=r)
        self.low_disk = Gauge(f"{PREFIX}_low_disk", "1 while free disk is below the low-disk threshold", registry=r)
        self.gc_removed = Counter(
            f"{PREFIX}_gc_removed_versions_total", "Versions removed from disk by GC", ["reason"], registry=r
        )
        self.restarts_detected = Counter(
            f"{PREFIX}_tfserving_restarts_detected_total", "tfserving restarts detected (config re-applied)", registry=r
        )
        self.hand_edits = Counter(
            f"{PREFIX}_config_hand_edits_total", "models.config found edited by someone else and put back", registry=r
        )
        self.tfserving_up = Gauge(f"{PREFIX}_tfserving_up", "1 when tfserving answered the last pass", registry=r)
        self.last_good_reconcile = time.time()
        self.has_good_reconcile = False
        since = Gauge(
            f"{PREFIX}_seconds_since_last_good_reconcile",
            "Seconds since the last reconcile pass that completed (since start if none yet)",
            registry=r,
        )
        since.set_function(lambda: time.time() - self.last_good_reconcile)

    def good_reconcile(self) -> None:
        self.last_good_reconcile = time.time()
        self.has_good_reconcile = True
