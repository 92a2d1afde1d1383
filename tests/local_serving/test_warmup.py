"""Warm-up replays assets.extra/tf_serving_warmup_requests like saved_model_warmup_util.cc, and nothing else.

In process (load_servable on real SavedModels): cheaper than a server, and the server runs the same code
inside the version's load; test_server covers the AVAILABLE/END side.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.common.errors import TFServingError
from services.local_serving.metrics import (
    LOAD_ATTEMPT_COUNT,
    RUNTIME_LATENCY,
    WARMUP_RECORDS_READ,
    Metrics,
)
from services.local_serving.servable import load_servable
from services.local_serving.warmup import MAX_NUM_RECORDS, WarmupOptions, warmup_file
from tests.support.savedmodels import write_model


def runtime_samples(metrics: Metrics, model_name: str) -> int:
    line = f':tensorflow:serving:runtime_latency_count{{model_name="{model_name}",API="Predict",runtime="TF1"}} '
    found = [row for row in metrics.render().splitlines() if row.startswith(line)]
    return int(found[0][len(line) :]) if found else 0


def test_no_warmup_file_means_no_warmup_at_all(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_model(tmp_path / "m", 1)
    metrics = Metrics.isolated()
    with caplog.at_level(logging.INFO, logger="services.local_serving.warmup"):
        servable = load_servable("m", 1, path, metrics=metrics)
    assert f"No warmup data file found at {warmup_file(path)}" in caplog.messages
    # Nothing ran: no signature call, no warm-up metric cell (the first real request pays the first-call cost).
    assert runtime_samples(metrics, "m") == 0 and runtime_samples(metrics, "warmup") == 0
    assert "model_warmup_latency_bucket" not in metrics.render()
    assert servable.predict("", _x(2.0), [])["y"].float_val == [2.0]
    assert runtime_samples(metrics, "m") == 1


def _x(value: float) -> dict[str, object]:
    import tensorflow as tf

    return {"x": tf.make_tensor_proto([[value]], dtype=tf.float32)}


def test_every_record_is_replayed_num_request_iterations_times(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m", 3, warmup_requests=4)
    assert warmup_file(path).is_file()
    metrics = Metrics.isolated()
    load_servable("m", 3, path, metrics=metrics)
    # The records name model "warmup": RunPredict labels runtime latency with the request's model name.
    assert runtime_samples(metrics, "warmup") == 4
    assert metrics.value(WARMUP_RECORDS_READ, str(path), "OK") == 4
    assert f':tensorflow:serving:model_warmup_latency_count{{model_path="{path}",status="OK"}} 1' in metrics.render()

    again = Metrics.isolated()
    load_servable("m", 3, path, metrics=again, warmup=WarmupOptions(num_request_iterations=3))
    assert runtime_samples(again, "warmup") == 12
    assert again.value(WARMUP_RECORDS_READ, str(path), "OK") == 4  # records, not executions


def test_enable_model_warmup_false_skips_even_a_broken_file(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m", 1, warmup_requests=1, warmup_fault="corrupt_crc")
    metrics = Metrics.isolated()
    load_servable("m", 1, path, metrics=metrics, warmup=WarmupOptions(enabled=False))
    assert runtime_samples(metrics, "warmup") == 0


@pytest.mark.parametrize(
    ("fault", "code", "text"),
    [
        # RecordReader errors come back as DATA_LOSS with upstream's hint appended.
        ("corrupt_crc", "DATA_LOSS", "corrupted record at {at}. Please verify your warmup data is in TFRecord format."),
        ("truncated", "DATA_LOSS", "truncated record at {at}"),
        ("unparseable", "INVALID_ARGUMENT", "Failed to parse warmup record: "),
        ("unknown_signature", "FAILED_PRECONDITION", 'Serving signature key "no_such_signature" not found.'),
        # Classify/Regress are not served here, so their records fail the load (upstream would run them).
        ("classify_log", "UNIMPLEMENTED", "Unsupported log_type for warmup: 2"),
    ],
)
def test_a_bad_warmup_file_fails_the_load_with_upstreams_status(
    tmp_path: Path, fault: str, code: str, text: str
) -> None:
    path = write_model(tmp_path / "m", 1, warmup_requests=2, warmup_fault=fault)  # type: ignore[arg-type]
    metrics = Metrics.isolated()
    with pytest.raises(TFServingError) as caught:
        load_servable("m", 1, path, metrics=metrics)
    assert caught.value.code == code
    assert text.split("{at}")[0] in caught.value.detail
    if fault == "corrupt_crc":
        assert caught.value.detail.endswith(text.split("{at}")[1])
    # The SavedModel itself loaded: the attempt counts as a success, the servable's load still fails.
    assert metrics.value(LOAD_ATTEMPT_COUNT, str(path), "success") == 1
    # The good records before the bad one ran (a framing fault breaks the second of the two).
    assert runtime_samples(metrics, "warmup") == (1 if fault in ("corrupt_crc", "truncated") else 2)


def test_more_than_the_maximum_number_of_records_is_invalid_argument(tmp_path: Path) -> None:
    assert MAX_NUM_RECORDS == 1000  # WarmupConsts::kMaxNumRecords
    exactly = write_model(tmp_path / "ok", 1, warmup_requests=MAX_NUM_RECORDS)
    load_servable("ok", 1, exactly, metrics=Metrics.isolated())
    over = write_model(tmp_path / "over", 1, warmup_requests=MAX_NUM_RECORDS + 1)
    metrics = Metrics.isolated()
    with pytest.raises(TFServingError) as caught:
        load_servable("over", 1, over, metrics=metrics)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.detail == f"Number of warmup records exceeds the maximum (1000) at {warmup_file(over)}"
    # Upstream counts a record after running it, so the 1001st ran before the limit was noticed.
    assert runtime_samples(metrics, "warmup") == MAX_NUM_RECORDS + 1


def test_warmup_records_are_in_the_model_cache_key(tmp_path: Path) -> None:
    plain = write_model(tmp_path / "a", 1)
    warmed = write_model(tmp_path / "b", 1, warmup_requests=2)
    broken = write_model(tmp_path / "c", 1, warmup_requests=2, warmup_fault="truncated")
    assert not warmup_file(plain).exists()
    assert warmup_file(warmed).read_bytes() != warmup_file(broken).read_bytes()
    with pytest.raises(ValueError, match="warmup"):
        write_model(tmp_path / "d", 1, warmup_fault="nonsense")  # type: ignore[arg-type]


def test_warmup_metrics_use_the_export_dir_and_the_status_string(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m", 1, warmup_requests=2, warmup_fault="truncated")
    metrics = Metrics.isolated()
    with pytest.raises(TFServingError):
        load_servable("m", 1, path, metrics=metrics)
    page = metrics.render()
    status = next(
        line.split('status="', 1)[1].split('"', 1)[0]
        for line in page.splitlines()
        if line.startswith(":tensorflow:serving:model_warmup_records_read{")
    )
    # absl::Status::ToString() of the reader's error, before the TFRecord hint is appended.
    assert status.startswith("DATA_LOSS: truncated record at ")
    assert "Please verify" not in status
    assert metrics.value(WARMUP_RECORDS_READ, str(path), status) == 1
    assert RUNTIME_LATENCY.labels == ("model_name", "API", "runtime")
