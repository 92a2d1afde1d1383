"""gRPC services on the upstream stubs: ModelService, PredictionService, and grpc.health.v1 if asked."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from services.common.errors import TFServingError
from services.local_serving import _protos
from services.local_serving.config import rpc_error
from services.local_serving.core import ServerCore
from services.local_serving.metrics import Metrics
from services.local_serving.servable import DEFAULT_SIGNATURE, Servable

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 1024
_T = TypeVar("_T")


def status_code(name: str) -> grpc.StatusCode:
    """grpc.StatusCode for a code name (unknown names are UNKNOWN)."""
    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)


def _abort(context: grpc.ServicerContext, error: TFServingError) -> None:
    message = error.detail
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "...TRUNCATED"
    context.abort(status_code(error.code), message)


def resolve_servable(core: ServerCore, model_spec: Any) -> Servable:
    """Version, label, or latest (highest AVAILABLE), as ServerCore::GetServableHandle does."""
    name = model_spec.name
    if model_spec.HasField("version"):
        return core.manager.servable(name, model_spec.version.value)
    if model_spec.version_label:
        return core.manager.servable(name, core.version_for_label(name, model_spec.version_label))
    return core.manager.servable(name, None)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServerCore, metrics: Metrics) -> None:
        self._core = core
        self._metrics = metrics

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """All versions of a model, highest first; version_label is ignored."""
        return _answer(context, lambda: self._status(request))

    def _status(self, request: Any) -> Any:
        _require_model_spec(request)
        spec = request.model_spec
        if spec.HasField("version"):
            # get_model_status_impl.cc asks for the one version, so an unknown model gives this text too.
            try:
                known = self._core.manager.statuses(spec.name)
            except TFServingError:
                known = []
            statuses = [s for s in known if s.version == spec.version.value]
            if not statuses:
                raise rpc_error("NOT_FOUND", f"Could not find version {spec.version.value} of model {spec.name}")
        else:
            statuses = self._core.manager.statuses(spec.name)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=int(status.state))
            entry.status.error_code = status_code(status.error_code).value[0]
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Replace the config; blocks (no timeout) until NEW model names reach AVAILABLE or END."""
        return _answer(context, lambda: self._reload(request))

    def _reload(self, request: Any) -> Any:
        if request.config.WhichOneof("config") != "model_config_list":
            # model_service_impl.cc HandleReloadConfigRequest: only a ModelConfigList reaches ServerCore.
            raise rpc_error(
                "INVALID_ARGUMENT",
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported",
            )
        self._core.reload_config(request.config)
        return model_management_pb2.ReloadConfigResponse()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Predict and GetModelMetadata (Classify/Regress/MultiInference stay UNIMPLEMENTED)."""

    def __init__(self, core: ServerCore, metrics: Metrics) -> None:
        self._core = core
        self._metrics = metrics

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Run a signature of the resolved version; the response names the version that answered.

        Counted like prediction_service_impl.cc Predict: request_count{model_name, status} always,
        request_latency{model_name, "Predict", "GRPC"} on success only.
        """
        started = time.monotonic()
        name = request.model_spec.name
        try:
            response = self._predict(request)
        except TFServingError as exc:
            self._metrics.count_request(name, exc.code)
            _abort(context, exc)
            raise  # context.abort raises; this line is never reached
        micros = (time.monotonic() - started) * 1e6
        self._metrics.record_request_latency(name, api="Predict", entrypoint="GRPC", micros=micros)
        self._metrics.count_request(name, "OK")
        return response

    def _predict(self, request: Any) -> Any:
        _require_model_spec(request)
        servable = resolve_servable(self._core, request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        outputs = servable.predict(
            signature, dict(request.inputs.items()), list(request.output_filter), model_name=request.model_spec.name
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.signature_name = signature
        response.model_spec.version.value = servable.version
        for alias, tensor in outputs.items():
            response.outputs[alias].CopyFrom(tensor)
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        """signature_def metadata: a SignatureDefMap in an Any, like TF Serving."""
        return _answer(context, lambda: self._metadata(request))

    def _metadata(self, request: Any) -> Any:
        _require_model_spec(request)
        fields = list(request.metadata_field)
        if not fields:
            raise rpc_error("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != "signature_def":
                raise rpc_error("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
        servable = resolve_servable(self._core, request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        # Pack() writes type_url "type.googleapis.com/tensorflow.serving.SignatureDefMap", as upstream.
        response.metadata["signature_def"].Pack(signature_map)
        return response


def _require_model_spec(request: Any) -> None:
    # predict_impl.cc, get_model_status_impl.cc, get_model_metadata_impl.cc: checked before anything else.
    if not request.HasField("model_spec"):
        raise rpc_error("INVALID_ARGUMENT", "Missing ModelSpec")


def _answer(context: grpc.ServicerContext, work: Callable[[], _T]) -> _T:
    """Run an RPC that upstream does not count (GetModelStatus, HandleReloadConfigRequest, metadata)."""
    try:
        return work()
    except TFServingError as exc:
        _abort(context, exc)
        raise  # context.abort raises; this line is never reached


_HEALTH_SERVICES = ("", "ModelService", "PredictionService")


def _health_handler() -> grpc.GenericRpcHandler:
    serving = _protos.HealthCheckResponse(status=1)

    def check(request: Any, context: grpc.ServicerContext) -> Any:
        if request.service not in _HEALTH_SERVICES:
            context.abort(grpc.StatusCode.NOT_FOUND, "service name unknown")
        return serving

    def watch(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        status = 1 if request.service in _HEALTH_SERVICES else 3
        yield _protos.HealthCheckResponse(status=status)
        done = threading.Event()
        context.add_callback(done.set)
        done.wait()

    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=_protos.HealthCheckRequest.FromString,
            response_serializer=_protos.HealthCheckResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=_protos.HealthCheckRequest.FromString,
            response_serializer=_protos.HealthCheckResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", handlers)


def build_grpc_server(
    core: ServerCore, metrics: Metrics, *, port: int, enable_health: bool, max_workers: int = 64
) -> grpc.Server:
    """A started gRPC server on 0.0.0.0:``port``; raises RuntimeError if the port cannot be bound.

    Many workers: a HandleReloadConfigRequest blocked on a missing base_path holds its thread forever,
    and Predict must keep answering meanwhile.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", -1)],
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, metrics), server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core, metrics), server)
    if enable_health:
        server.add_generic_rpc_handlers((_health_handler(),))
    bound = server.add_insecure_port(f"0.0.0.0:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind gRPC port {port}")
    server.start()
    return server
