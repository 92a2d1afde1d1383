"""A model's request counters from the node's tfserving monitoring endpoint, for master's rollout gates.

tfserving exports them itself (``--monitoring_config_file``, Prometheus text on the REST port):
``:tensorflow:serving:request_count{model_name,status}`` for every Predict/Classify/Regress call and
``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (microseconds) for successful ones
(tensorflow_serving/servables/tensorflow/util.cc). config_manager reads the page when master polls its
status and reports the cumulative counters per model; master compares them over a wave's bake time.
"""

from __future__ import annotations

import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.common.contracts import TrafficCounters

logger = logging.getLogger(__name__)

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
PREDICT_API = "Predict"


def parse_traffic(text: str) -> dict[str, TrafficCounters]:
    """Per model: request counts by status and the Predict latency histogram (entrypoints summed).
    ValueError when the page is not Prometheus text."""
    traffic: dict[str, TrafficCounters] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUEST_COUNT, REQUEST_LATENCY):
            continue
        for sample in family.samples:
            model = sample.labels.get("model_name")
            if not model:
                continue
            counters = traffic.setdefault(model, TrafficCounters())
            if family.name == REQUEST_COUNT and sample.name.endswith(("_total", "request_count")):
                status = sample.labels.get("status", "")
                counters.requests[status] = counters.requests.get(status, 0) + int(sample.value)
            elif sample.name.endswith("_bucket") and sample.labels.get("API") == PREDICT_API:
                bound = _bound(sample.labels.get("le", "+Inf"))
                counters.latency_buckets[bound] = counters.latency_buckets.get(bound, 0) + int(sample.value)
    return traffic


def _bound(le: str) -> str:
    return "+Inf" if le in ("+Inf", "Inf", "inf") else f"{float(le):g}"


class TrafficReader:
    """Reads the monitoring page with a deadline; None when it cannot (no url, no answer, bad page)."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, timeout: float) -> None:
        self.client = client
        self.url = url
        self.timeout = timeout
        self.last_error: str | None = None

    async def read(self) -> dict[str, TrafficCounters] | None:
        try:
            response = await self.client.get(self.url, timeout=self.timeout)
            response.raise_for_status()
            traffic = parse_traffic(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{self.url}: {exc.__class__.__name__}: {exc}"
            if error != self.last_error:
                logger.warning("cannot read tfserving's request metrics (rollout gates wait): %s", error)
            self.last_error = error
            return None
        self.last_error = None
        return traffic
