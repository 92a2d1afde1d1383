"""Async gRPC client for TF Serving's ModelService and PredictionService.

The messages are the project's own (proto package ``modelfleet.tfs``) but the method paths are
upstream's exactly, so this talks to stock ``tensorflow/serving`` without importing TensorFlow.
Every call takes a deadline; every gRPC failure becomes :class:`TFServingError` with the status
code's name in ``code`` (decided by the code, never by the message text).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

import grpc
from google.protobuf.message import Message

from services.common.errors import InvalidInput, TFServingError
from services.common.tfs._generated import (
    error_codes_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
)
from services.common.tfs.config import build_server_config
from services.common.tfs.records import (
    ModelEntry,
    PredictInputs,
    PredictResult,
    SignatureSpec,
    TensorValue,
    VersionState,
    VersionStatus,
)
from services.common.tfs.tensors import decode_numeric, decode_tensor, encode_input, signature_specs

logger = logging.getLogger(__name__)

GET_MODEL_STATUS: Final = "/tensorflow.serving.ModelService/GetModelStatus"
HANDLE_RELOAD_CONFIG: Final = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
PREDICT: Final = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA: Final = "/tensorflow.serving.PredictionService/GetModelMetadata"
SIGNATURE_DEF_TYPE_URL: Final = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

RETRYABLE_CODES: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

_RESPONSES: Final[dict[str, Any]] = {
    GET_MODEL_STATUS: get_model_status_pb2.GetModelStatusResponse,
    HANDLE_RELOAD_CONFIG: model_management_pb2.ReloadConfigResponse,
    PREDICT: predict_pb2.PredictResponse,
    GET_MODEL_METADATA: get_model_metadata_pb2.GetModelMetadataResponse,
}


def translate_rpc_error(exc: grpc.aio.AioRpcError, *, method: str, **extra: Any) -> TFServingError:
    """A failed call as :class:`TFServingError`: ``code`` is the gRPC status name, by status code."""
    code = exc.code().name
    return TFServingError(
        f"{method.rsplit('/', 1)[-1]} failed: {code}: {exc.details() or ''}",
        code=code,
        retryable=code in RETRYABLE_CODES,
        method=method,
        **extra,
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise InvalidInput(f"a TF Serving call needs a positive, finite timeout (got {timeout!r})")


def _model_spec(name: str, *, version: int | None, label: str | None, signature_name: str = "") -> Any:
    if version is not None and label is not None:
        raise InvalidInput("give a version or a label, not both")
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec


class TFServingClient:
    """One channel to one TF Serving (``host:port``); use ``async with`` or call :meth:`close`.

    The channel is opened lazily on the first call, inside the running event loop.
    """

    def __init__(self, target: str, *, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self._options = list(options)
        self._channel: Any = None
        self._methods: dict[str, Any] = {}

    async def __aenter__(self) -> TFServingClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled). The client may be used again after."""
        channel, self._channel = self._channel, None
        self._methods.clear()
        if channel is not None:
            await channel.close()

    def _method(self, path: str) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        if path not in self._methods:
            self._methods[path] = self._channel.unary_unary(
                path,
                request_serializer=_serialize,
                response_deserializer=_RESPONSES[path].FromString,
            )
        return self._methods[path]

    async def _call(
        self,
        path: str,
        request: Message,
        *,
        timeout: float,
        **extra: Any,
    ) -> Any:
        _check_timeout(timeout)
        try:
            return await self._method(path)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            error = translate_rpc_error(exc, method=path, target=self.target, **extra)
            logger.debug("tfserving call failed: %s", error.detail, extra={"target": self.target, **extra})
            raise error from exc

    async def reload_config(
        self,
        entries: Sequence[ModelEntry],
        *,
        timeout: float,
    ) -> None:
        """HandleReloadConfigRequest with exactly ``entries`` (the list replaces TF Serving's in full).

        Returns when TF Serving accepts the config, which is before the versions load: poll
        :meth:`get_model_status` afterwards. A new model whose base_path has no version blocks the
        call until the deadline (``TFServingError(code="DEADLINE_EXCEEDED")``).
        """
        request = model_management_pb2.ReloadConfigRequest(config=build_server_config(entries))
        response = await self._call(HANDLE_RELOAD_CONFIG, request, timeout=timeout, models=[e.name for e in entries])
        error_code = int(response.status.error_code)
        if error_code != 0:
            code = str(error_codes_pb2.Code.Name(error_code)) if error_code in _CODE_NUMBERS else "UNKNOWN"
            raise TFServingError(
                f"HandleReloadConfigRequest refused: {code}: {response.status.error_message}",
                code=code,
                retryable=code in RETRYABLE_CODES,
                method=HANDLE_RELOAD_CONFIG,
                target=self.target,
            )
        logger.info("tfserving config reloaded", extra={"target": self.target, "models": len(entries)})

    async def get_model_status(
        self,
        name: str,
        *,
        version: int | None = None,
        timeout: float,
    ) -> list[VersionStatus]:
        """Every version TF Serving knows of model ``name`` (or just ``version``), highest first.

        Unloaded versions stay listed as END for good. Unknown model or version:
        ``TFServingError(code="NOT_FOUND")``.
        """
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(name, version=version, label=None))
        response = await self._call(GET_MODEL_STATUS, request, timeout=timeout, model=name)
        statuses = [
            VersionStatus(
                version=int(s.version),
                state=VersionState(s.state) if s.state in _STATE_NUMBERS else VersionState.UNKNOWN,
                error_code=int(s.status.error_code),
                error_message=str(s.status.error_message),
            )
            for s in response.model_version_status
        ]
        return sorted(statuses, key=lambda s: s.version, reverse=True)

    async def get_model_metadata(
        self,
        name: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float,
    ) -> dict[str, SignatureSpec]:
        """The serving signatures of one version (default: the highest AVAILABLE), by signature key."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(name, version=version, label=label), metadata_field=["signature_def"]
        )
        response = await self._call(GET_MODEL_METADATA, request, timeout=timeout, model=name)
        if "signature_def" not in response.metadata:
            raise TFServingError(
                "GetModelMetadata answered without signature_def metadata", code="INTERNAL", model=name
            )
        packed = response.metadata["signature_def"]
        if not packed.type_url.endswith("/tensorflow.serving.SignatureDefMap"):
            raise TFServingError(
                f"GetModelMetadata signature_def has type {packed.type_url!r}", code="INTERNAL", model=name
            )
        # Parsed with our own SignatureDefMap: same fields and numbers as upstream's, so the bytes
        # real TF Serving packs read as they are; no type registry lookup.
        signature_map = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value)
        return signature_specs(signature_map.signature_def)

    async def predict(
        self,
        name: str,
        inputs: PredictInputs,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        timeout: float,
    ) -> PredictResult:
        """One Predict call; ``inputs`` as in :func:`services.common.tfs.tensors.encode_input`.

        Numeric outputs come back flattened as floats; string outputs are left out.
        """
        request = predict_pb2.PredictRequest(
            model_spec=_model_spec(name, version=version, label=label, signature_name=signature_name)
        )
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(encode_input(key, value))
        response = await self._call(PREDICT, request, timeout=timeout, model=name, version=version)
        outputs: dict[str, list[float]] = {}
        for key in sorted(response.outputs):
            values = decode_numeric(response.outputs[key])
            if values is not None:
                outputs[key] = values
        spec = response.model_spec
        return PredictResult(
            model_name=str(spec.name),
            version=int(spec.version.value),
            signature_name=str(spec.signature_name),
            outputs=outputs,
        )

    async def predict_request(
        self, request: Message, *, name: str, version: int, timeout: float
    ) -> dict[str, TensorValue]:
        """Send a ready ``PredictRequest`` to version ``version`` of ``name``; every output decoded.

        The request's model_spec is replaced (name, pinned version; its signature_name is kept).
        """
        pinned = predict_pb2.PredictRequest()
        pinned.CopyFrom(request)
        signature = pinned.model_spec.signature_name
        pinned.model_spec.CopyFrom(_model_spec(name, version=version, label=None, signature_name=signature))
        response = await self._call(PREDICT, pinned, timeout=timeout, model=name, version=version)
        return {key: decode_tensor(response.outputs[key]) for key in sorted(response.outputs)}


_STATE_NUMBERS: Final = frozenset(int(s) for s in VersionState)
_CODE_NUMBERS: Final = frozenset(error_codes_pb2.Code.values())
