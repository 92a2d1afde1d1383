"""One loaded model version: load a SavedModel with TensorFlow, run a signature, describe signatures.

TensorFlow is imported lazily (inside functions) so config parsing and flag handling stay cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from services.local_serving.config import rpc_error

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

    def predict(self, signature_name: str, inputs: dict[str, Any], output_filter: list[str]) -> dict[str, Any]:
        """Run ``signature_name`` on TensorProto inputs; return TensorProto outputs."""
        import tensorflow as tf

        key = signature_name or DEFAULT_SIGNATURE
        function = self.signatures.get(key)
        if function is None:
            raise rpc_error("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        expected = function.structured_input_signature[1]
        missing = sorted(set(expected) - set(inputs))
        extra = sorted(set(inputs) - set(expected))
        if missing or extra:
            raise rpc_error(
                "INVALID_ARGUMENT",
                f"input tensor alias not found in signature: {', '.join(extra)}"
                if extra
                else f"Missing input tensors in request: {', '.join(missing)}",
            )
        try:
            arguments = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in inputs.items()}
            for alias, spec in expected.items():
                if arguments[alias].dtype != spec.dtype:
                    raise rpc_error(
                        "INVALID_ARGUMENT",
                        f"Expects arg[{alias}] to be {spec.dtype.name} but {arguments[alias].dtype.name} is provided",
                    )
            outputs = function(**arguments)
        except tf.errors.OpError as exc:
            raise rpc_error(_code_name(exc.error_code), exc.message) from exc
        except (TypeError, ValueError) as exc:
            raise rpc_error("INVALID_ARGUMENT", str(exc)) from exc
        wanted = output_filter or sorted(outputs)
        unknown = [alias for alias in wanted if alias not in outputs]
        if unknown:
            raise rpc_error("INVALID_ARGUMENT", f"output tensor alias not found in signature: {unknown[0]}")
        return {alias: tf.make_tensor_proto(outputs[alias].numpy()) for alias in wanted}


def _code_name(error_code: int) -> str:
    import grpc

    for code in grpc.StatusCode:
        if code.value[0] == error_code:
            return str(code.name)
    return "UNKNOWN"


def read_signature_defs(version_path: Path) -> dict[str, Any]:
    """The serve MetaGraph's SignatureDefs, read from saved_model.pb(txt) exactly as TF Serving does."""
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
        raise rpc_error(
            "NOT_FOUND",
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {version_path}",
        )
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def.items())
    raise rpc_error(
        "NOT_FOUND",
        "Could not find meta graph def matching supplied tags: { serve }. To inspect available tag-sets "
        "in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load one version; raise TFServingError with TF Serving's code and message on failure."""
    import tensorflow as tf

    signature_defs = read_signature_defs(path)
    try:
        root = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    except tf.errors.OpError as exc:
        raise rpc_error(_code_name(exc.error_code), exc.message) from exc
    except FileNotFoundError as exc:
        raise rpc_error("NOT_FOUND", str(exc).splitlines()[0]) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise rpc_error("UNKNOWN", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    servable = Servable(
        name=name,
        version=version,
        path=path,
        signatures=dict(root.signatures.items()),
        signature_defs=signature_defs,
        root=root,
    )
    _warm_up(servable)
    return servable


def _warm_up(servable: Servable) -> None:
    """Call each signature once so the first real Predict does not pay for graph setup."""
    import tensorflow as tf

    for key, function in servable.signatures.items():
        try:
            arguments = {
                alias: tf.zeros([1 if dim is None else dim for dim in spec.shape], dtype=spec.dtype)
                for alias, spec in function.structured_input_signature[1].items()
            }
            function(**arguments)
        except Exception:  # a signature that cannot run on zeros is still servable
            logger.debug("warm-up of %s skipped", key, extra={"model": servable.name})
