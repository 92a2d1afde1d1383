"""local_serving driven by the upstream tensorflow-serving-api client, one shared server per module.

The tests run in file order and build on each other's state (the config grows); each says what it
expects to find. The missing-base_path hang is last because it stalls the server on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.savedmodels import install_model, write_model
from tests.support.serving import (
    FAST_TEST_FLAGS,
    ServingProcess,
    UpstreamClient,
    free_port,
    model_config_text,
    start_local_serving,
)


@dataclass
class Server:
    serving: ServingProcess
    client: UpstreamClient
    root: Path
    models: dict[str, dict[str, object]] = field(default_factory=dict)

    def base(self, name: str) -> Path:
        return self.root / name

    def config_text(self) -> str:
        return model_config_text(list(self.models.values()))

    def reload(self, *, timeout: float = 30) -> None:
        self.client.reload(self.config_text(), timeout=timeout)

    def rest(self, path: str, body: object = None) -> tuple[int, str]:
        assert self.serving.rest_port is not None
        url = f"http://127.0.0.1:{self.serving.rest_port}{path}"
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def load_failures(self, model: str) -> int:
        """Failed SavedModel loads of any version of ``model`` (load_attempt_count is keyed by export dir)."""
        _, text = self.rest("/monitoring/prometheus/metrics")
        prefix = f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{self.base(model)}/'
        return sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix) and line.split("}")[0].endswith(',status="fail"')
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serving")
    write_model(root / "m", 1)
    write_model(root / "m", 2)
    write_model(root / "solo", 3)
    write_model(root / "solo", 4)
    models: dict[str, dict[str, object]] = {
        "m": {"name": "m", "base_path": root / "m", "policy": "all", "labels": {"stable": 1}},
        "solo": {"name": "solo", "base_path": root / "solo"},
    }
    config = root / "models.config"
    config.write_text(model_config_text(list(models.values())))
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    serving = start_local_serving(
        config,
        extra_args=[
            *FAST_TEST_FLAGS,
            "--allow_version_labels_for_unavailable_models=true",
            "--enable_grpc_healthcheck_service=true",
            f"--rest_api_port={free_port()}",
            f"--monitoring_config_file={monitoring}",
        ],
    )
    client = UpstreamClient(serving.target)
    try:
        # The port opens once each model has one version AVAILABLE; "all" loads the rest just after.
        client.wait_for_state("m", 1, "AVAILABLE")
        yield Server(serving, client, root, models)
    finally:
        client.close()
        serving.stop()


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_predict_answers_from_the_version_asked_for(server: Server) -> None:
    client = server.client
    assert client.predict("m", x=3.0) == (2, 6.0)  # latest = highest AVAILABLE
    assert client.predict("m", version=1, x=3.0) == (1, 3.0)
    assert client.predict("m", label="stable", x=3.0) == (1, 3.0)
    assert client.predict("m", version=2, signature_name="serving_default") == (2, 2.0)
    # latest(1) is the default policy: only the newest version of "solo" is loaded.
    assert client.predict("solo") == (4, 4.0)
    assert [(v, s) for v, s, _, _ in client.status("solo")] == [(4, "AVAILABLE")]


def test_predict_errors_are_tf_servings(server: Server) -> None:
    client = server.client
    err = rpc_error(lambda: client.predict("m", label="nope"))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    )
    err = rpc_error(lambda: client.predict("m", version=9))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(m, 9)")
    err = rpc_error(lambda: client.predict("ghost"))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(ghost)")
    err = rpc_error(lambda: client.predict("m", signature_name="other"))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "other" not found.',
    )
    err = rpc_error(lambda: client.predict("m", input_name="features"))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Signature input alias: x(feed name: serving_default_x:0) not found in request and no default value "
        "provided. Inputs expected to be in the request {features}, or default input alias set: ",
    )
    # predict_impl.cc / get_model_metadata_impl.cc / get_model_status_impl.cc: no model_spec at all.
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    for call, request in [
        (client.prediction_service.Predict, predict_pb2.PredictRequest()),
        (client.prediction_service.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest()),
        (client.model_service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()),
    ]:
        err = rpc_error(lambda call=call, request=request: call(request, timeout=5))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_predict_outputs_use_the_typed_fields_like_tf_serving(server: Server) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from services.common.tfs.tensors import decode_numeric

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.version.value = 2
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.5], [2.0]], dtype=tf.float32))
    output = server.client.prediction_service.Predict(request, timeout=5).outputs["y"]
    # Tensor::AsProtoField: values in float_val, nothing in tensor_content (what tf.make_tensor_proto writes).
    assert output.tensor_content == b"" and list(output.float_val) == [3.0, 4.0]
    assert [d.size for d in output.tensor_shape.dim] == [2, 1]
    assert decode_numeric(output) == [3.0, 4.0]  # the sidecars' decoder reads it


def test_get_model_status_lists_every_version_highest_first(server: Server) -> None:
    client = server.client
    assert client.status("m") == [(2, "AVAILABLE", 0, ""), (1, "AVAILABLE", 0, "")]
    assert client.status("m", version=1) == [(1, "AVAILABLE", 0, "")]
    # version_label is ignored by GetModelStatus: all versions come back.
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    request.model_spec.version_label = "stable"
    response = client.model_service.GetModelStatus(request, timeout=5)
    assert [s.version for s in response.model_version_status] == [2, 1]
    err = rpc_error(lambda: client.status("ghost"))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model ghost")
    err = rpc_error(lambda: client.status("m", version=7))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model m")
    # A version of an unknown model asks for that one version: the same text, not "any versions".
    err = rpc_error(lambda: client.status("ghost", version=7))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model ghost")
    assert server.rest("/v1/models/ghost/versions/7") == (
        404,
        '{\n "error": "Could not find version 7 of model ghost"\n}',
    )


def test_metadata_is_a_signature_def_map_like_tf_serving(server: Server) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    request.model_spec.version_label = "stable"
    request.metadata_field.append("signature_def")
    response = server.client.prediction_service.GetModelMetadata(request, timeout=5)
    assert response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signatures)
    serving_default = signatures.signature_def["serving_default"]
    assert list(serving_default.inputs) == ["x"]
    assert [d.size for d in serving_default.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert list(serving_default.outputs) == ["y"]
    request.ClearField("metadata_field")
    err = rpc_error(lambda: server.client.prediction_service.GetModelMetadata(request, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_health_service_when_enabled(server: Server) -> None:
    from services.local_serving._protos import HealthCheckRequest, HealthCheckResponse

    check = server.client.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString,
    )
    for service in ("", "ModelService", "PredictionService"):
        assert check(HealthCheckRequest(service=service), timeout=5).status == 1  # SERVING
    err = rpc_error(lambda: check(HealthCheckRequest(service="Nope"), timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_rest_status_and_prometheus_metrics(server: Server) -> None:
    status, body = server.rest("/v1/models/m/versions/1")
    assert status == 200
    assert json.loads(body) == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    status, body = server.rest("/v1/models/m/labels/stable")
    assert status == 200 and [s["version"] for s in json.loads(body)["model_version_status"]] == ["2", "1"]
    status, body = server.rest("/v1/models/ghost")
    assert status == 404 and json.loads(body) == {"error": "Could not find any versions of model ghost"}
    assert server.rest("/v1/models")[0] == 400
    status, metrics = server.rest("/monitoring/prometheus/metrics")
    assert status == 200
    lines = metrics.splitlines()
    # util.cc RecordModelRequestCount: {model_name, status}, no api label; gRPC Predicts and REST calls only.
    assert any(line.startswith(':tensorflow:serving:request_count{model_name="m",status="OK"} ') for line in lines)
    assert any(
        line.startswith(':tensorflow:serving:request_count{model_name="ghost",status="NOT_FOUND"} ') for line in lines
    )
    assert any(
        line.startswith(':tensorflow:serving:request_count{model_name="",status="INVALID_ARGUMENT"} ') for line in lines
    )
    # request_latency{model_name, API, entrypoint}: microseconds, buckets 10 * 1.8**i (i < 33), then +Inf.
    buckets = [line for line in lines if line.startswith(':tensorflow:serving:request_latency_bucket{model_name="m",')]
    grpc_buckets = [line for line in buckets if 'API="Predict",entrypoint="GRPC"' in line]
    assert len(grpc_buckets) == 34
    assert 'le="10"}' in grpc_buckets[0] and 'le="18"}' in grpc_buckets[1] and 'le="+Inf"}' in grpc_buckets[-1]
    assert any('API="",entrypoint="REST"' in line for line in buckets)  # the status GETs above
    assert ":tensorflow:serving:request_latency_sum{" in metrics
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    # Every version was loaded once: load_attempt_count and load_latency by export dir.
    path = server.base("m") / "1"
    assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{path}",status="success"}} 1' in lines
    assert any(line.startswith(f':tensorflow:cc:saved_model:load_latency{{model_path="{path}"}} ') for line in lines)
    # No warm-up file in these models: no warm-up metrics either.
    assert ":tensorflow:serving:model_warmup_latency_bucket" not in metrics


def test_rest_predict_row_and_columnar(server: Server) -> None:
    status, body = server.rest("/v1/models/m/labels/stable:predict", {"instances": [[3.0], [4.0]]})
    assert (status, json.loads(body)) == (200, {"predictions": [[3.0], [4.0]]})
    status, body = server.rest("/v1/models/m/versions/2:predict", {"inputs": {"x": [[3.0]]}})
    assert (status, json.loads(body)) == (200, {"outputs": [[6.0]]})
    status, body = server.rest("/v1/models/m:predict", {"instances": [{"x": [1.0]}]})
    assert (status, json.loads(body)) == (200, {"predictions": [[2.0]]})
    status, body = server.rest("/v1/models/ghost:predict", {"instances": [[1.0]]})
    assert (status, json.loads(body)) == (404, {"error": "Servable not found for request: Latest(ghost)"})
    status, body = server.rest("/v1/models/m/labels/nope:predict", {"instances": [[1.0]]})
    assert status == 400 and "Unrecognized servable version label" in json.loads(body)["error"]


def test_reload_validation_rejects_bad_lists(server: Server) -> None:
    good = server.config_text()
    duplicated = good.replace(
        "model_config_list {",
        'model_config_list {\n config { name: "m" base_path: "/x" model_platform: "tensorflow" }',
        1,
    )
    err = rpc_error(lambda: server.client.reload(duplicated))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Illegal to list model m multiple times in config list",
    )
    relative = model_config_text([{"name": "rel", "base_path": "relative/dir"}])
    err = rpc_error(lambda: server.client.reload(relative))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "absolute path" in err.details()
    # model_service_impl.cc: a request whose config holds no ModelConfigList never reaches ServerCore.
    err = rpc_error(lambda: server.client.reload(""))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
        "supported",
    )
    both = good.replace('model_platform: "tensorflow"', 'model_platform: "tensorflow" model_type: TENSORFLOW', 1)
    err = rpc_error(lambda: server.client.reload(both))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("Illegal setting both ModelServerConfig::model_type (deprecated) and ")
    # Nothing was applied: both models still serve.
    assert server.client.predict("m")[0] == 2 and server.client.predict("solo")[0] == 4


def test_labels_must_name_available_versions_unless_new(server: Server) -> None:
    server.models["m"]["labels"] = {"stable": 2}
    server.reload()
    assert server.client.predict("m", label="stable") == (2, 2.0)
    # --allow_version_labels_for_unavailable_models: a NEW label may name an unavailable version...
    server.models["m"]["labels"] = {"stable": 2, "canary": 7}
    server.reload()
    err = rpc_error(lambda: server.client.predict("m", label="canary"))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(m, 7)")
    # ...but moving an existing label onto an unavailable version fails.
    server.models["m"]["labels"] = {"stable": 8, "canary": 7}
    err = rpc_error(server.reload)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "Request to assign label to version 8 of model m, which is not currently available for inference"
    )
    assert server.client.predict("m", label="stable") == (2, 2.0)  # the label map did not change
    server.models["m"]["labels"] = {"stable": 1}
    server.reload()
    assert server.client.predict("m", label="stable") == (1, 1.0)


def test_version_switch_under_predict_load_fails_no_request(server: Server) -> None:
    base = server.base("switch")
    install_model(base, 1)
    server.models["switch"] = {"name": "switch", "base_path": base}
    server.reload()  # a new name: returns only once a version is AVAILABLE
    assert server.client.predict("switch") == (1, 1.0)

    failures: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        client = UpstreamClient(server.serving.target)
        try:
            while not stop.is_set():
                try:
                    # bench/ measures the 600 ms deadline; here a generous one keeps a loaded CI honest.
                    version, y = client.predict("switch", x=2.0, timeout=2.0)
                    assert y == 2.0 * version
                    seen.append(version)
                except (grpc.RpcError, AssertionError) as exc:
                    failures.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        install_model(base, 2)
        server.client.wait_for_state("switch", 1, "END")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert {1, 2} <= set(seen) and seen[-1] == 2
    assert len(seen) > 50
    assert [(v, s) for v, s, _, _ in server.client.status("switch")] == [(2, "AVAILABLE"), (1, "END")]


def test_corrupt_version_leaves_previous_serving_and_is_not_retried(server: Server) -> None:
    base = server.base("c")
    install_model(base, 1)
    server.models["c"] = {"name": "c", "base_path": base}
    server.reload()
    install_model(base, 2, corrupt="truncated_pb")
    version, state, code, message = server.client.wait_for_state("c", 2, "END")
    assert code == grpc.StatusCode.DATA_LOSS.value[0] and "Can't parse" in message
    assert server.client.status("c")[1][:2] == (1, "AVAILABLE")
    assert server.client.predict("c") == (1, 1.0)
    failures = server.load_failures("c")
    assert failures == 1  # --max_num_load_retries=0: one attempt
    time.sleep(2.5)  # two more filesystem polls: the failed version is still on disk, not retried
    assert server.load_failures("c") == 1
    assert server.client.status("c")[0] == (version, state, code, message)
    # Removing the directory and installing good bytes under the same number loads it again.
    shutil.rmtree(base / "2")
    time.sleep(3)  # a poll must see the version gone
    install_model(base, 2)
    server.client.wait_for_state("c", 2, "AVAILABLE")
    server.client.wait_for_state("c", 1, "END")
    assert server.client.predict("c") == (2, 2.0)


def test_warmup_records_run_before_available_and_a_failing_one_ends_the_version(server: Server) -> None:
    base = server.base("w")
    write_model(base, 1, warmup_requests=3)
    server.models["w"] = {"name": "w", "base_path": base}
    server.reload()  # returns once v1 is AVAILABLE, i.e. after its warm-up
    _, metrics = server.rest("/monitoring/prometheus/metrics")
    assert f':tensorflow:serving:model_warmup_records_read{{model_path="{base / "1"}",status="OK"}} 3' in metrics
    assert server.client.predict("w") == (1, 1.0)
    # saved_model_bundle_source_adapter.cc: the warm-up is part of the load, so its error ends the version.
    write_model(base, 2, warmup_requests=1, warmup_fault="unknown_signature")
    _, _, code, message = server.client.wait_for_state("w", 2, "END")
    assert (code, message) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        'Serving signature key "no_such_signature" not found.',
    )
    assert server.client.status("w")[1][:2] == (1, "AVAILABLE")
    assert server.client.predict("w") == (1, 1.0)
    _, metrics = server.rest("/monitoring/prometheus/metrics")
    # The SavedModel itself loaded fine.
    assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{base / "2"}",status="success"}} 1' in metrics


def test_reload_drops_models_but_their_versions_stay_listed_as_end(server: Server) -> None:
    del server.models["c"]
    server.reload(timeout=5)  # dropped names unload in the background: no wait, so a short deadline holds
    server.client.wait_for_state("c", 2, "END")
    assert [(v, s) for v, s, _, _ in server.client.status("c")] == [(2, "END"), (1, "END")]
    err = rpc_error(lambda: server.client.predict("c"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_version_dirs_with_leading_zeros_are_found_by_polling(server: Server) -> None:
    base = server.base("m")
    install_model(base, 3)
    os.rename(base / "3", base / "0003")
    (base / "4.tmp").mkdir()
    server.client.wait_for_state("m", 3, "AVAILABLE")
    assert server.client.predict("m") == (3, 3.0)
    assert 4 not in [v for v, *_ in server.client.status("m")]


def test_reload_adding_a_model_that_fails_reports_it_and_stays_applied(server: Server) -> None:
    base = server.base("broken")
    install_model(base, 1, corrupt="garbage")
    server.models["broken"] = {"name": "broken", "base_path": base}
    err = rpc_error(server.reload)
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert err.details().startswith("1 model(s) did not become available: {{{name: broken version: 1} due to error:")
    assert "DATA_LOSS" in err.details()
    server.reload(timeout=5)  # the config stayed applied: the same request now returns OK at once
    del server.models["broken"]
    server.reload()


def test_reload_adding_a_missing_base_path_hangs_like_tf_serving(server: Server) -> None:
    ghost = server.base("ghost")
    server.models["ghost"] = {"name": "ghost", "base_path": ghost}
    err = rpc_error(lambda: server.reload(timeout=2))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # One mutex serialises reloads: even a reload of the old list now waits behind the stuck one.
    ghost_entry = server.models.pop("ghost")
    err = rpc_error(lambda: server.reload(timeout=1.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The missing path drops every filesystem poll: a new version of another model is not discovered.
    serving_before = server.client.predict("m")[0]
    install_model(server.base("m"), 50)
    time.sleep(2.5)
    assert 50 not in [v for v, *_ in server.client.status("m")]
    assert server.client.predict("m")[0] == serving_before  # serving itself is unaffected
    # Once the directory appears, the stuck reload finishes and polling resumes for everyone; the
    # queued reload (the old list, without "ghost") is applied next, so ghost loads and then unloads.
    install_model(ghost, 1)
    server.client.wait_for_state("m", 50, "AVAILABLE")
    assert server.client.wait_for_state("ghost", 1, "END") == (1, "END", 0, "")
    server.models["ghost"] = ghost_entry
    server.reload(timeout=20)
    assert server.client.predict("ghost") == (1, 1.0)
