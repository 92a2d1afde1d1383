"""TFServingClient against a real grpc.aio server built from upstream's tensorflow-serving-api stubs.

The server only knows upstream's messages and upstream's service registration, so a call that works
proves the method path and the bytes interoperate in both directions.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2 as up_tensor
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as up_metadata
from tensorflow_serving.apis import get_model_status_pb2 as up_status
from tensorflow_serving.apis import model_management_pb2 as up_management
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2 as up_predict
from tensorflow_serving.config import model_server_config_pb2 as up_config

from services.common.errors import InvalidInput, TFServingError
from services.common.tfs import (
    ModelEntry,
    PredictResult,
    SignatureSpec,
    TensorSpec,
    TFServingClient,
    VersionState,
    VersionStatus,
    render_config,
)

STATE = up_status.ModelVersionStatus.State


@dataclass
class FakeTFServing(model_service_pb2_grpc.ModelServiceServicer, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Upstream servicers with TF Serving's documented answers for the cases the tests need."""

    reloads: list[up_config.ModelServerConfig] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    async def GetModelStatus(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.model_spec.name != "ranker":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {request.model_spec.name}"
            )
        response = up_status.GetModelStatusResponse()
        for version, state, code, message in [
            (1, STATE.END, 0, ""),
            (3, STATE.LOADING, 0, ""),
            (2, STATE.END, 5, "Could not find SavedModel .pb or .pbtxt"),
            (4, 35, 0, ""),  # a state this client does not know
        ]:
            status = response.model_version_status.add(version=version, state=state)
            status.status.error_code, status.status.error_message = code, message
        return response

    async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
        self.reloads.append(request.config)
        names = {c.name for c in request.config.model_config_list.config}
        if "blocks" in names:  # a new model whose base_path has no version: TF Serving never answers
            await asyncio.sleep(30)
        if "labelled" in names:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not currently available for inference")
        response = up_management.ReloadConfigResponse()
        if "refused" in names:
            response.status.error_code = 3  # INVALID_ARGUMENT carried in the body
            response.status.error_message = "bad config"
        return response

    async def Predict(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        x = request.inputs["x"]
        response = up_predict.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 7
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        doubled = response.outputs["doubled"]
        doubled.dtype = types_pb2.DT_FLOAT
        doubled.tensor_shape.CopyFrom(x.tensor_shape)
        doubled.float_val.extend(2 * v for v in x.float_val)
        packed = response.outputs["packed"]  # what tf.make_tensor_proto writes: tensor_content
        packed.dtype = types_pb2.DT_INT64
        packed.tensor_shape.dim.add(size=3)
        packed.tensor_content = struct.pack("<3q", 1, -2, 3)
        splat = response.outputs["splat"]  # one value for a [2, 2] tensor means "all four"
        splat.dtype = types_pb2.DT_DOUBLE
        splat.tensor_shape.dim.add(size=2)
        splat.tensor_shape.dim.add(size=2)
        splat.double_val.append(0.5)
        words = response.outputs["words"]
        words.dtype = types_pb2.DT_STRING
        words.string_val.append(b"left out")
        return response

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        signatures = up_metadata.SignatureDefMap()
        sig = signatures.signature_def["serving_default"]
        sig.method_name = "tensorflow/serving/predict"
        x = sig.inputs["x"]
        x.name, x.dtype = "serving_default_x:0", types_pb2.DT_FLOAT
        x.tensor_shape.dim.add(size=-1)
        x.tensor_shape.dim.add(size=1)
        y = sig.outputs["y"]
        y.name, y.dtype = "StatefulPartitionedCall:0", types_pb2.DT_FLOAT
        y.tensor_shape.unknown_rank = True
        response = up_metadata.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.metadata["signature_def"].Pack(signatures)  # type URL as real TF Serving sends it
        return response


@pytest.fixture
async def tfserving() -> AsyncIterator[tuple[FakeTFServing, str]]:
    server = grpc.aio.server()
    fake = FakeTFServing()
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake, server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_reload_sends_the_same_config_as_models_config(tfserving: tuple[FakeTFServing, str]) -> None:
    fake, target = tfserving
    entries = [ModelEntry("ranker", "/models/ranker", (3, 7), labels={"stable": 3}), ModelEntry("e", "/models/e", ())]
    async with TFServingClient(target) as client:
        await client.reload_config(entries, timeout=5)
        await client.reload_config([], timeout=5)
    expected = text_format.Parse(render_config(entries), up_config.ModelServerConfig())
    assert fake.reloads[0] == expected
    assert fake.reloads[1].WhichOneof("config") == "model_config_list"  # empty list, not an unset config
    assert len(fake.reloads[1].model_config_list.config) == 0


async def test_reload_errors_keep_the_status_code(tfserving: tuple[FakeTFServing, str]) -> None:
    _, target = tfserving
    async with TFServingClient(target) as client:
        with pytest.raises(TFServingError) as in_body:
            await client.reload_config([ModelEntry("refused", "/m", (1,))], timeout=5)
        with pytest.raises(TFServingError) as as_status:
            await client.reload_config([ModelEntry("labelled", "/m", (1,))], timeout=5)
    assert (in_body.value.code, in_body.value.retryable) == ("INVALID_ARGUMENT", False)
    assert "bad config" in in_body.value.detail
    assert (as_status.value.code, as_status.value.retryable) == ("FAILED_PRECONDITION", False)


async def test_a_reload_that_never_returns_hits_the_deadline(tfserving: tuple[FakeTFServing, str]) -> None:
    _, target = tfserving
    loop = asyncio.get_running_loop()
    async with TFServingClient(target) as client:
        started = loop.time()
        with pytest.raises(TFServingError) as caught:
            await client.reload_config([ModelEntry("blocks", "/m", (1,))], timeout=0.3)
        assert loop.time() - started < 5
    assert (caught.value.code, caught.value.retryable) == ("DEADLINE_EXCEEDED", True)


async def test_status_highest_version_first(tfserving: tuple[FakeTFServing, str]) -> None:
    fake, target = tfserving
    async with TFServingClient(target) as client:
        statuses = await client.get_model_status("ranker", timeout=5)
        await client.get_model_status("ranker", version=3, timeout=5)
    assert statuses == [
        VersionStatus(4, VersionState.UNKNOWN, 0, ""),
        VersionStatus(3, VersionState.LOADING, 0, ""),
        VersionStatus(2, VersionState.END, 5, "Could not find SavedModel .pb or .pbtxt"),
        VersionStatus(1, VersionState.END, 0, ""),
    ]
    assert fake.requests[-1].model_spec.version.value == 3


async def test_unknown_model_is_not_found_and_not_retryable(tfserving: tuple[FakeTFServing, str]) -> None:
    _, target = tfserving
    async with TFServingClient(target) as client:
        with pytest.raises(TFServingError) as caught:
            await client.get_model_status("nope", timeout=5)
    assert (caught.value.code, caught.value.retryable) == ("NOT_FOUND", False)
    assert caught.value.extra["model"] == "nope"


async def test_metadata_reads_the_signature_def_map_upstream_packs(tfserving: tuple[FakeTFServing, str]) -> None:
    fake, target = tfserving
    async with TFServingClient(target) as client:
        signatures = await client.get_model_metadata("ranker", label="stable", timeout=5)
    assert signatures == {
        "serving_default": SignatureSpec(
            method_name="tensorflow/serving/predict",
            inputs={"x": TensorSpec("serving_default_x:0", "DT_FLOAT", (-1, 1))},
            outputs={"y": TensorSpec("StatefulPartitionedCall:0", "DT_FLOAT", None)},
        )
    }
    assert fake.requests[-1].model_spec.version_label == "stable"
    assert list(fake.requests[-1].metadata_field) == ["signature_def"]


async def test_predict_round_trip(tfserving: tuple[FakeTFServing, str]) -> None:
    fake, target = tfserving
    async with TFServingClient(target) as client:
        result = await client.predict("ranker", {"x": ([1.0, 2.5], (2, 1))}, version=7, timeout=5)
    assert result == PredictResult(
        model_name="ranker",
        version=7,
        signature_name="serving_default",
        outputs={"doubled": [2.0, 5.0], "packed": [1.0, -2.0, 3.0], "splat": [0.5] * 4},
    )
    sent = fake.requests[-1]
    assert sent.model_spec.version.value == 7
    assert sent.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sent.inputs["x"].tensor_shape.dim] == [2, 1]
    assert isinstance(sent.inputs["x"], up_tensor.TensorProto)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_nobody_listening_is_unavailable_and_retryable() -> None:
    async with TFServingClient(f"127.0.0.1:{_closed_port()}") as client:
        with pytest.raises(TFServingError) as caught:
            await client.get_model_status("ranker", timeout=2)
    assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)


@pytest.mark.parametrize("deadline", [0, -1, float("inf"), float("nan")])
async def test_every_call_needs_a_real_deadline(deadline: float) -> None:
    async with TFServingClient("127.0.0.1:1") as client:
        with pytest.raises(InvalidInput):
            await client.get_model_status("ranker", timeout=deadline)


async def test_version_and_label_together_are_refused() -> None:
    async with TFServingClient("127.0.0.1:1") as client:
        with pytest.raises(InvalidInput):
            await client.predict("m", {"x": [1.0]}, version=1, label="stable", timeout=1)
        with pytest.raises(InvalidInput):
            await client.predict("m", {"x": ([1.0, 2.0], (3,))}, timeout=1)
