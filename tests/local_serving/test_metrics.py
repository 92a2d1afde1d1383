"""Metrics, load texts and output encoding as upstream writes them (in process, on real SavedModels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import TFServingError
from services.local_serving import config as cfg
from services.local_serving.metrics import (
    LATENCY_BUCKETS,
    LOAD_ATTEMPT_COUNT,
    LOAD_LATENCY,
    Metrics,
)
from services.local_serving.servable import load_servable
from services.local_serving.tensor_protos import as_proto_field
from tests.support.savedmodels import write_model


def test_latency_buckets_are_exponential_10_by_1_8_times_33() -> None:
    assert len(LATENCY_BUCKETS) == 33
    assert LATENCY_BUCKETS[:3] == (10, 18, 32.4)
    assert LATENCY_BUCKETS[-1] == pytest.approx(10 * 1.8**32)


def test_histogram_and_counter_exposition_follow_prometheus_exporter() -> None:
    metrics = Metrics.isolated()
    metrics.record_request_latency("m", api="Predict", entrypoint="GRPC", micros=18)  # == a limit: next bucket
    metrics.record_request_latency("m", api="Predict", entrypoint="GRPC", micros=5)
    metrics.count_request("m", "OK")
    metrics.count_request('we"ird\\', "NOT_FOUND")
    lines = metrics.render().splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in lines
    assert ':tensorflow:serving:request_count{model_name="we\\"ird\\\\",status="NOT_FOUND"} 1' in lines
    prefix = ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",'
    buckets = [line[len(prefix) :] for line in lines if line.startswith(prefix)]
    assert buckets[:4] == ['le="10"} 1', 'le="18"} 1', 'le="32.4"} 2', 'le="58.32"} 2']
    assert buckets[-2:] == ['le="1.47476e+09"} 2', 'le="+Inf"} 2']
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 23' in lines
    assert ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="GRPC"} 2' in lines
    # Metrics are ordered by their upstream name (a std::map), each with its TYPE line.
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert types == sorted(types, key=lambda n: n.replace(":", "/")) and len(types) == 7


def test_process_wide_cells_are_shared_like_the_default_registry() -> None:
    Metrics().count_request("shared-check", "OK")
    assert ':tensorflow:serving:request_count{model_name="shared-check",status="OK"}' in Metrics().render()
    assert "shared-check" not in Metrics.isolated().render()


def test_load_attempts_and_latency_are_counted_by_export_dir(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m", 5)
    metrics = Metrics.isolated()
    load_servable("m", 5, path, metrics=metrics)
    assert metrics.value(LOAD_ATTEMPT_COUNT, str(path), "success") == 1
    assert metrics.value(LOAD_LATENCY, str(path)) > 0
    missing = tmp_path / "m" / "6"
    missing.mkdir()
    with pytest.raises(TFServingError) as caught:
        load_servable("m", 6, missing, metrics=metrics)
    # tensorflow/cc/saved_model/reader.cc ReadSavedModel
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.detail == (
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {missing}. Check that the "
        "directory exists and that you have the right permissions for accessing it."
    )
    assert metrics.value(LOAD_ATTEMPT_COUNT, str(missing), "fail") == 1
    assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{missing}",status="fail"}} 1' in (
        metrics.render()
    )


def test_only_a_meta_graph_tagged_exactly_serve_is_loaded(tmp_path: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    path = write_model(tmp_path / "m", 1)
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    saved_model.meta_graphs[0].meta_info_def.tags.append("gpu")
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    with pytest.raises(TFServingError) as caught:
        load_servable("m", 1, path, metrics=Metrics.isolated())
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.detail == (
        "Could not find meta graph def matching supplied tags: { serve }. To inspect available tag-sets in the "
        "SavedModel, please use the SavedModel CLI: `saved_model_cli`"
    )


def test_outputs_are_typed_fields_not_tensor_content() -> None:
    import numpy as np

    proto = as_proto_field(np.array([[1.5], [2.5]], dtype=np.float32))
    assert proto.tensor_content == b"" and list(proto.float_val) == [1.5, 2.5]
    assert [d.size for d in proto.tensor_shape.dim] == [2, 1]
    assert list(as_proto_field(np.array([1, -2], dtype=np.int64)).int64_val) == [1, -2]
    assert list(as_proto_field(np.array([7], dtype=np.uint8)).int_val) == [7]
    assert list(as_proto_field(np.array([True])).bool_val) == [True]
    assert list(as_proto_field(np.array([b"a", b"bc"], dtype=object)).string_val) == [b"a", b"bc"]
    assert list(as_proto_field(np.array([1.0], dtype=np.float16)).half_val) == [0x3C00]
    scalar = as_proto_field(np.float64(2.0))
    assert list(scalar.double_val) == [2.0] and len(scalar.tensor_shape.dim) == 0


def _one_model(extra: str) -> object:
    return cfg.parse_config_text(f'model_config_list {{ config {{ name: "m" base_path: "/m" {extra} }} }}')


def test_deprecated_model_type_tensorflow_is_the_tensorflow_platform() -> None:
    # server_core.cc GetPlatform
    cfg.validate_platforms(_one_model("model_type: TENSORFLOW"))
    with pytest.raises(TFServingError, match=r"^ModelServerConfig::model_type choice 2 not supported\.$"):
        cfg.validate_platforms(_one_model("model_type: OTHER"))
    with pytest.raises(TFServingError, match="Illegal setting both ModelServerConfig::model_type"):
        cfg.validate_platforms(_one_model('model_type: TENSORFLOW model_platform: "tensorflow"'))
    with pytest.raises(TFServingError) as caught:
        cfg.validate_platforms(_one_model(""))
    assert caught.value.detail == (
        "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
        "ModelServerConfig::model_platform, model name is m"
    )
    # Switching between the two spellings of the same platform is no platform change.
    cfg.validate_no_platform_changes(_one_model('model_platform: "tensorflow"'), _one_model("model_type: TENSORFLOW"))
