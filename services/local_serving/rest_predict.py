"""REST predict (``POST /v1/models/M[/versions/N|/labels/L]:predict``), row and columnar JSON formats.

Like TF Serving's REST API: ``{"instances": [...]}`` answers ``{"predictions": [...]}``,
``{"inputs": ...}`` answers ``{"outputs": ...}``; the body carries no version.
"""

from __future__ import annotations

from typing import Any

from services.local_serving.config import rpc_error
from services.local_serving.servable import DEFAULT_SIGNATURE, Servable


def _input_dtypes(servable: Servable, signature: str) -> dict[str, Any]:
    import tensorflow as tf

    signature_def = servable.signature_defs.get(signature)
    if signature_def is None or signature not in servable.signatures:
        raise rpc_error("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
    return {alias: tf.as_dtype(info.dtype) for alias, info in signature_def.inputs.items()}


def _rows_to_columns(instances: list[Any], aliases: list[str]) -> dict[str, Any]:
    if instances and all(isinstance(row, dict) for row in instances):
        return {alias: [row.get(alias) for row in instances] for alias in aliases}
    if len(aliases) != 1:
        raise rpc_error("INVALID_ARGUMENT", "instances must be objects naming each input of the signature")
    return {aliases[0]: instances}


def predict_json(servable: Servable, body: dict[str, Any]) -> dict[str, Any]:
    """Run a REST predict body against ``servable``; return the REST response body."""
    import tensorflow as tf

    signature = body.get("signature_name") or DEFAULT_SIGNATURE
    dtypes = _input_dtypes(servable, signature)
    if ("instances" in body) == ("inputs" in body):
        raise rpc_error("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key (exactly one is required)")
    row_format = "instances" in body
    if row_format:
        if not isinstance(body["instances"], list):
            raise rpc_error("INVALID_ARGUMENT", "'instances' must be a list")
        columns = _rows_to_columns(body["instances"], sorted(dtypes))
    else:
        inputs = body["inputs"]
        columns = inputs if isinstance(inputs, dict) else dict.fromkeys(dtypes, inputs)
    try:
        protos = {alias: tf.make_tensor_proto(value, dtype=dtypes.get(alias)) for alias, value in columns.items()}
    except (TypeError, ValueError) as exc:
        raise rpc_error("INVALID_ARGUMENT", str(exc)) from exc
    outputs = {
        alias: tf.make_ndarray(proto).tolist() for alias, proto in servable.predict(signature, protos, []).items()
    }
    if row_format:
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        rows = len(next(iter(outputs.values())))
        return {"predictions": [{alias: values[i] for alias, values in outputs.items()} for i in range(rows)]}
    return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
