"""config_manager reads tfserving's own request metrics (upstream names, as local_serving exports them)."""

from __future__ import annotations

from services.config_manager.traffic import parse_traffic
from services.local_serving.metrics import Metrics


def test_request_counts_and_predict_latency_per_model() -> None:
    metrics = Metrics.isolated()
    for _ in range(3):
        metrics.count_request("ranker", "OK")
        metrics.record_request_latency("ranker", api="Predict", entrypoint="GRPC", micros=900)
    metrics.count_request("ranker", "INVALID_ARGUMENT")
    metrics.record_request_latency("ranker", api="Predict", entrypoint="REST", micros=50_000)
    metrics.record_request_latency("ranker", api="Classify", entrypoint="GRPC", micros=5)
    metrics.count_request("other", "OK")

    traffic = parse_traffic(metrics.render())

    ranker = traffic["ranker"]
    assert ranker.requests == {"OK": 3, "INVALID_ARGUMENT": 1}
    assert (ranker.total, ranker.errors) == (4, 1)
    assert ranker.latency_buckets["+Inf"] == 4  # Predict only, both entrypoints
    up_to_1ms = max(v for k, v in ranker.latency_buckets.items() if k != "+Inf" and float(k) < 1200)
    assert up_to_1ms == 3
    assert traffic["other"].requests == {"OK": 1}
