"""Prometheus metrics of the puller, on a per-app registry (several apps share one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.contracts import Alarm

ALARM_KINDS = (
    "mass-removal",
    "disk-full",
    "desired-state-invalid",
    "desired-state-missing",
    "desired-state-reset",
    "bucket-unreachable",
    "download-failed",
    "install-failed",
    "golden-invalid",
)
SYNC_MODES = ("events", "fallback", "polling")


class PullerMetrics:
    """Every metric the puller exports at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.downloaded_bytes = Counter(
            "modelfleet_puller_downloaded_bytes", "Bytes of installed versions downloaded", registry=r
        )
        self.versions_installed = Counter(
            "modelfleet_puller_versions_installed", "Versions renamed into place", registry=r
        )
        self.sync_seconds = Histogram(
            "modelfleet_puller_sync_seconds",
            "Duration of sync passes",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=r,
        )
        self.errors = Counter("modelfleet_puller_errors", "Errors by kind", ["kind"], registry=r)
        self.last_success = Gauge(
            "modelfleet_puller_last_success_timestamp_seconds", "Unix time of the last successful pass", registry=r
        )
        self.alarm = Gauge("modelfleet_puller_alarm", "Active alarms by kind (count)", ["kind"], registry=r)
        self.list_pages = Counter("modelfleet_puller_list_pages", "Bucket listing pages requested", registry=r)
        self.listings = Counter(
            "modelfleet_puller_listings",
            "Listings made by sync passes (full: the models prefix; targeted: the prefixes events named)",
            ["scope"],
            registry=r,
        )
        self.object_reads = Counter(
            "modelfleet_puller_object_reads", "Desired-state document reads (downloads excluded)", registry=r
        )
        self.downloads_in_flight = Gauge(
            "modelfleet_puller_downloads_in_flight", "Versions downloading now", registry=r
        )
        self.sync_mode = Gauge(
            "modelfleet_puller_sync_mode",
            "1 for the mode in force: events (notifications wake syncs), fallback (events configured, "
            "subscription down: polling), polling (events not configured)",
            ["mode"],
            registry=r,
        )
        self.events = Counter(
            "modelfleet_puller_events",
            "Bucket notifications handled: synced (acked after the pass that covered them), covered "
            "(already reflected: acked at once), ignored (not ours)",
            ["outcome"],
            registry=r,
        )
        self.event_lag = Histogram(
            "modelfleet_puller_event_lag_seconds",
            "Notification publish time to ack (the sync covering it done)",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 600),
            registry=r,
        )
        self.events_waiting = Gauge(
            "modelfleet_puller_events_waiting", "Notifications received, not yet covered by a pass", registry=r
        )
        for mode in SYNC_MODES:
            self.sync_mode.labels(mode=mode).set(0)
        for kind in ALARM_KINDS:
            self.alarm.labels(kind=kind).set(0)

    def set_mode(self, mode: str) -> None:
        """One mode at 1, the others at 0."""
        for name in SYNC_MODES:
            self.sync_mode.labels(mode=name).set(1 if name == mode else 0)

    def set_alarms(self, alarms: list[Alarm]) -> None:
        """Gauge per kind = number of active alarms of that kind (0 when clear)."""
        counts = dict.fromkeys(ALARM_KINDS, 0)
        for alarm in alarms:
            counts[alarm.kind] = counts.get(alarm.kind, 0) + 1
        for kind, count in counts.items():
            self.alarm.labels(kind=kind).set(count)
