"""One loaded model version: load a SavedModel with TensorFlow, warm it up, run a signature.

TensorFlow is imported lazily (inside functions) so config parsing and flag handling stay cheap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from services.local_serving.config import rpc_error
from services.local_serving.metrics import LOAD_ATTEMPT_COUNT, LOAD_LATENCY, Metrics
from services.local_serving.tensor_protos import as_proto_field
from services.local_serving.warmup import WarmupOptions, run_saved_model_warmup

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"


@dataclass
class Servable:
    """A loaded, AVAILABLE-able version: its signatures and their SignatureDef protos."""

    name: str
    version: int
    path: Path
    signatures: dict[str, Any]
    signature_defs: dict[str, Any]
    # Keeps the loaded object (and its variables) alive as long as the servable is referenced.
    root: Any = None
    metrics: Metrics | None = None

    def predict(
        self,
        signature_name: str,
        inputs: dict[str, Any],
        output_filter: list[str],
        *,
        model_name: str | None = None,
    ) -> dict[str, Any]:
        """Run ``signature_name`` on TensorProto inputs; return TensorProto outputs in typed fields.

        Checks and texts follow predict_util.cc RunPredict / PreProcessPrediction; ``model_name`` (the
        request's) labels the runtime latency, as RecordRuntimeLatency does.
        """
        import tensorflow as tf

        key = signature_name or DEFAULT_SIGNATURE
        function = self.signatures.get(key)
        if function is None:
            raise rpc_error("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        expected = function.structured_input_signature[1]
        signature_def = self.signature_defs.get(key)
        _check_inputs(expected, inputs, signature_def)
        outputs_expected = sorted(signature_def.outputs) if signature_def is not None else []
        seen: set[str] = set()
        for alias in output_filter:
            if outputs_expected and alias not in outputs_expected:
                raise rpc_error(
                    "INVALID_ARGUMENT",
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(outputs_expected)}}}.",
                )
            if alias in seen:
                raise rpc_error("INVALID_ARGUMENT", f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        try:
            arguments = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in inputs.items()}
            for alias, spec in expected.items():
                if arguments[alias].dtype != spec.dtype:
                    raise rpc_error(
                        "INVALID_ARGUMENT",
                        f"Expects arg[{alias}] to be {spec.dtype.name} but {arguments[alias].dtype.name} is provided",
                    )
            started = time.monotonic()
            outputs = function(**arguments)
            if self.metrics is not None:
                micros = (time.monotonic() - started) * 1e6
                self.metrics.record_runtime_latency(model_name or self.name, api="Predict", micros=micros)
        except tf.errors.OpError as exc:
            raise rpc_error(code_name(exc.error_code), exc.message) from exc
        except (TypeError, ValueError) as exc:
            raise rpc_error("INVALID_ARGUMENT", str(exc)) from exc
        wanted = output_filter or sorted(outputs)
        unknown = [alias for alias in wanted if alias not in outputs]
        if unknown:
            raise rpc_error("INVALID_ARGUMENT", f"output tensor alias not found in signature: {unknown[0]}")
        return {alias: as_proto_field(outputs[alias]) for alias in wanted}


def _check_inputs(expected: dict[str, Any], inputs: dict[str, Any], signature_def: Any) -> None:
    """VerifyRequestInputsSize, then GetInputValues' alias check (signatures here have no defaults)."""
    sent, wanted = sorted(inputs), sorted(expected)
    if len(sent) != len(wanted):
        extra = sorted(set(sent) - set(wanted))
        missing = sorted(set(wanted) - set(sent))
        raise rpc_error(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(wanted)}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}.",
        )
    for alias in wanted:
        if alias not in inputs:
            feed = signature_def.inputs[alias].name if signature_def is not None else alias
            raise rpc_error(
                "INVALID_ARGUMENT",
                f"Signature input alias: {alias}(feed name: {feed}) not found in request and no default value "
                f"provided. Inputs expected to be in the request {{{','.join(sent)}}}, or default input alias set: ",
            )


def code_name(error_code: int) -> str:
    """The gRPC status name of a TensorFlow error code (UNKNOWN if none)."""
    import grpc

    for code in grpc.StatusCode:
        if code.value[0] == error_code:
            return str(code.name)
    return "UNKNOWN"


def read_signature_defs(version_path: Path) -> dict[str, Any]:
    """The SignatureDefs of the MetaGraph tagged exactly {serve}, read as TF's reader.cc does."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    pb, pbtxt = version_path / "saved_model.pb", version_path / "saved_model.pbtxt"
    saved_model = saved_model_pb2.SavedModel()
    if pb.is_file():
        try:
            saved_model.ParseFromString(pb.read_bytes())
        except DecodeError as exc:
            raise rpc_error("DATA_LOSS", f"Can't parse {pb} as binary proto") from exc
    elif pbtxt.is_file():
        try:
            text_format.Parse(pbtxt.read_text(encoding="utf-8"), saved_model)
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            raise rpc_error("DATA_LOSS", f"Can't parse {pbtxt} as text proto") from exc
    else:
        # tensorflow/cc/saved_model/reader.cc ReadSavedModel
        raise rpc_error(
            "NOT_FOUND",
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {version_path}. "
            "Check that the directory exists and that you have the right permissions for accessing it.",
        )
    # reader.cc FindMetaGraphDef: the tag SET must equal {serve}; {serve, gpu} does not match.
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {SERVE_TAG}:
            return dict(meta_graph.signature_def.items())
    raise rpc_error(
        "NOT_FOUND",
        f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}. To inspect available tag-sets "
        "in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )


def _load_saved_model(path: Path) -> tuple[dict[str, Any], Any]:
    import tensorflow as tf

    signature_defs = read_signature_defs(path)
    try:
        root = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    except tf.errors.OpError as exc:
        raise rpc_error(code_name(exc.error_code), exc.message) from exc
    except FileNotFoundError as exc:
        raise rpc_error("NOT_FOUND", str(exc).splitlines()[0]) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise rpc_error("UNKNOWN", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return signature_defs, root


def load_servable(
    name: str,
    version: int,
    path: Path,
    *,
    metrics: Metrics | None = None,
    warmup: WarmupOptions | None = None,
) -> Servable:
    """Load one version, then replay its warm-up records; raise TFServingError (TF Serving's code and
    message) on failure.

    Counts like tensorflow/cc/saved_model/loader.cc LoadSavedModel: every attempt adds to
    load_attempt_count{model_path, status="success"|"fail"} and its microseconds to load_latency{model_path};
    a warm-up failure after a successful SavedModel load still fails the servable's load
    (saved_model_bundle_source_adapter.cc runs the warm-up inside the servable creator).
    """
    warmup = warmup or WarmupOptions()
    metrics = metrics or Metrics()
    started = time.monotonic()
    try:
        signature_defs, root = _load_saved_model(path)
    except Exception:
        _count_load(metrics, path, ok=False, started=started)
        raise
    _count_load(metrics, path, ok=True, started=started)
    servable = Servable(
        name=name,
        version=version,
        path=path,
        signatures=dict(root.signatures.items()),
        signature_defs=signature_defs,
        root=root,
        metrics=metrics,
    )
    if warmup.enabled:
        run_saved_model_warmup(servable, path, options=warmup, metrics=metrics)
    return servable


def _count_load(metrics: Metrics | None, path: Path, *, ok: bool, started: float) -> None:
    micros = int((time.monotonic() - started) * 1e6)
    logger.info(
        "SavedModel load for tags { %s }; Status: %s. Took %s microseconds.",
        SERVE_TAG,
        "success" if ok else "fail",
        micros,
    )
    if metrics is not None:
        metrics.increment(LOAD_ATTEMPT_COUNT, str(path), "success" if ok else "fail")
        metrics.increment(LOAD_LATENCY, str(path), by=micros)
