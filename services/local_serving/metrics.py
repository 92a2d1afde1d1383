"""TF Serving's own metrics, exported the way tensorflow_serving/util/prometheus_exporter.cc does.

Names, labels and buckets are upstream's (each metric below cites where it is defined); prometheus-client
is not used because it appends ``_total`` to counters and renders histograms differently.
Latencies are microseconds, as upstream records them.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field


def exponential_buckets(scale: float, growth_factor: float, bucket_count: int) -> tuple[float, ...]:
    """tsl::monitoring::Buckets::Exponential: ``scale * growth_factor**i`` for i < bucket_count."""
    limits = []
    bound = scale
    for _ in range(bucket_count):
        limits.append(bound)
        bound *= growth_factor
    return tuple(limits)


#: "Scale of 10, power of 1.8 with bucket count 33 (~20 minutes)", used by every latency sampler upstream.
LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)


def _label_value(value: str) -> str:
    # SanitizeLabelValue escapes only backslash and double quote.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _prometheus_name(name: str) -> str:
    # GetPrometheusMetricName: every character outside [a-zA-Z0-9_] becomes ':'.
    return "".join(c if c.isascii() and (c.isalnum() or c == "_") else ":" for c in name)


def _six_digits(value: float) -> str:
    # absl::StrCat(double) prints %.6g.
    return f"{value:.6g}"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> list[str]:
    return [f'{name}="{_label_value(value)}"' for name, value in zip(names, values, strict=True)]


@dataclass
class _Histogram:
    # One bucket per limit plus the overflow bucket (tsl adds DBL_MAX as the last limit).
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        # tensorflow::histogram::Histogram::Add: upper_bound, so a value equal to a limit goes above it.
        self.counts[bisect.bisect_right(LATENCY_BUCKETS, value)] += 1
        self.total += value


@dataclass(frozen=True)
class _Descriptor:
    name: str
    labels: tuple[str, ...]
    histogram: bool = False


# tensorflow/cc/saved_model/loader.cc
LOAD_ATTEMPT_COUNT = _Descriptor("/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status"))
LOAD_LATENCY = _Descriptor("/tensorflow/cc/saved_model/load_latency", ("model_path",))
# tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc
WARMUP_LATENCY = _Descriptor("/tensorflow/serving/model_warmup_latency", ("model_path", "status"), histogram=True)
WARMUP_RECORDS_READ = _Descriptor("/tensorflow/serving/model_warmup_records_read", ("model_path", "status"))
# tensorflow_serving/servables/tensorflow/util.cc
REQUEST_COUNT = _Descriptor("/tensorflow/serving/request_count", ("model_name", "status"))
REQUEST_LATENCY = _Descriptor("/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), True)
RUNTIME_LATENCY = _Descriptor("/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), True)

_ALL = (
    LOAD_ATTEMPT_COUNT,
    LOAD_LATENCY,
    WARMUP_LATENCY,
    WARMUP_RECORDS_READ,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    RUNTIME_LATENCY,
)


class _Cells:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[_Descriptor, Counter[tuple[str, ...]]] = {d: Counter() for d in _ALL if not d.histogram}
        self.histograms: dict[_Descriptor, dict[tuple[str, ...], _Histogram]] = {d: {} for d in _ALL if d.histogram}


# Like tsl's CollectionRegistry::Default(): one set of cells per process, written from wherever the
# event happens (loader, warm-up, RPC handlers) and read by the exporter.
_PROCESS_CELLS = _Cells()


class Metrics:
    """A view of the process's metrics; thread-safe. Label values are recorded exactly as upstream does.

    ``Metrics()`` shares the process-wide cells (as upstream's static metrics do); ``Metrics.isolated()``
    has its own, for tests.
    """

    def __init__(self, cells: _Cells | None = None) -> None:
        cells = cells or _PROCESS_CELLS
        self._lock = cells.lock
        self._counters = cells.counters
        self._histograms = cells.histograms

    @classmethod
    def isolated(cls) -> Metrics:
        """Metrics with private cells."""
        return cls(_Cells())

    def increment(self, metric: _Descriptor, *labels: str, by: int = 1) -> None:
        """Add ``by`` to a counter cell."""
        with self._lock:
            self._counters[metric][labels] += by

    def observe(self, metric: _Descriptor, *labels: str, value: float) -> None:
        """Add one sample to a histogram cell."""
        with self._lock:
            self._histograms[metric].setdefault(labels, _Histogram()).add(value)

    def count_request(self, model_name: str, status: str) -> None:
        """RecordModelRequestCount: one Predict/Classify/Regress (gRPC) or REST request ended with ``status``."""
        self.increment(REQUEST_COUNT, model_name, status)

    def record_request_latency(self, model_name: str, *, api: str, entrypoint: str, micros: float) -> None:
        """RecordRequestLatency: a successful request's wall time (entrypoint "GRPC" or "REST")."""
        self.observe(REQUEST_LATENCY, model_name, api, entrypoint, value=micros)

    def record_runtime_latency(self, model_name: str, *, api: str, micros: float) -> None:
        """RecordRuntimeLatency: the time spent running the graph (runtime "TF1", as the session path says)."""
        self.observe(RUNTIME_LATENCY, model_name, api, "TF1", value=micros)

    def value(self, metric: _Descriptor, *labels: str) -> int:
        """A counter cell's value (0 if never incremented)."""
        with self._lock:
            return self._counters[metric][labels]

    def render(self) -> str:
        """The Prometheus text page: metrics ordered by name, a TYPE line for each, as GeneratePage writes."""
        lines: list[str] = []
        with self._lock:
            for metric in sorted(_ALL, key=lambda d: d.name):
                name = _prometheus_name(metric.name)
                if metric.histogram:
                    lines.append(f"# TYPE {name} histogram")
                    for values, histogram in sorted(self._histograms[metric].items()):
                        lines.extend(_histogram_lines(name, _labels(metric.labels, values), histogram))
                else:
                    lines.append(f"# TYPE {name} counter")
                    for values, count in sorted(self._counters[metric].items()):
                        lines.append(f"{name}{{{','.join(_labels(metric.labels, values))}}} {count}")
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: list[str], histogram: _Histogram) -> list[str]:
    prefix = f"{name}_bucket{{{','.join(labels)}{',' if labels else ''}"
    lines = []
    cumulative = 0
    for index, count in enumerate(histogram.counts):
        cumulative += count
        limit = _six_digits(LATENCY_BUCKETS[index]) if index < len(LATENCY_BUCKETS) else "+Inf"
        lines.append(f'{prefix}le="{limit}"}} {cumulative}')
    lines.append(f"{name}_sum{{{','.join(labels)}}} {_six_digits(histogram.total)}")
    lines.append(f"{name}_count{{{','.join(labels)}}} {cumulative}")
    return lines
