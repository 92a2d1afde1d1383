"""TF Serving's REST predict body -> a ``PredictRequest``, without TensorFlow.

Follows tensorflow_serving/util/json_tensor.cc (FillPredictRequestFromJson): the row format
(``"instances"``: a list, one element per batch row; objects name the inputs, anything else needs a
signature with exactly one input) and the columnar format (``"inputs"``: an object of named inputs or
one value for a single-input signature). Shapes come from the nesting (which must be rectangular);
dtypes come from the signature, so the same body gives the bytes TF Serving would build. Strings are
JSON strings or ``{"b64": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping
from typing import Any

from services.common.errors import InvalidInput
from services.common.tfs._generated import predict_pb2, tensor_pb2
from services.common.tfs.records import SignatureSpec

DEFAULT_SIGNATURE = "serving_default"

_INT_FIELDS = {
    "DT_INT8": ("int_val", -(2**7), 2**7 - 1),
    "DT_INT16": ("int_val", -(2**15), 2**15 - 1),
    "DT_INT32": ("int_val", -(2**31), 2**31 - 1),
    "DT_UINT8": ("int_val", 0, 2**8 - 1),
    "DT_UINT16": ("int_val", 0, 2**16 - 1),
    "DT_INT64": ("int64_val", -(2**63), 2**63 - 1),
    "DT_UINT32": ("uint32_val", 0, 2**32 - 1),
    "DT_UINT64": ("uint64_val", 0, 2**64 - 1),
}


def signature_for(signatures: Mapping[str, SignatureSpec], name: str) -> tuple[str, SignatureSpec]:
    """The signature a request names ("" = serving_default); InvalidInput with the known names if absent."""
    key = name or DEFAULT_SIGNATURE
    spec = signatures.get(key)
    if spec is None:
        known = ", ".join(sorted(signatures)) or "none"
        raise InvalidInput(f"Serving signature name: {key!r} not found in signature def (known: {known})")
    return key, spec


def request_from_rest(
    body: Mapping[str, Any], signatures: Mapping[str, SignatureSpec], *, signature_name: str = ""
) -> Any:
    """A ``PredictRequest`` (model_spec: only signature_name set) for a REST predict body."""
    name = signature_name or body.get("signature_name") or ""
    if not isinstance(name, str):
        raise InvalidInput("'signature_name' must be a string")
    key, spec = signature_for(signatures, name)
    if ("instances" in body) == ("inputs" in body):
        raise InvalidInput("a predict body has exactly one of 'instances' or 'inputs'")
    named = _rows(body["instances"], spec) if "instances" in body else _columns(body["inputs"], spec)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = key
    for input_name, value in named.items():
        tensor_spec = spec.inputs.get(input_name)
        if tensor_spec is None:
            raise InvalidInput(f"input {input_name!r} is not in signature {key!r} (inputs: {sorted(spec.inputs)})")
        request.inputs[input_name].CopyFrom(_tensor(input_name, value, tensor_spec.dtype))
    check_shapes(request, spec)
    missing = sorted(set(spec.inputs) - set(named))
    if missing:
        raise InvalidInput(f"signature {key!r} needs inputs {missing} that the request does not give")
    return request


def check_shapes(request: Any, spec: SignatureSpec) -> None:
    """InvalidInput when an input's shape cannot fit the signature (rank, or a fixed dimension)."""
    for name, tensor in request.inputs.items():
        wanted = spec.inputs[name].shape if name in spec.inputs else None
        if wanted is None:
            continue
        shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
        if len(shape) != len(wanted) or any(w not in (-1, s) for s, w in zip(shape, wanted, strict=False)):
            raise InvalidInput(f"input {name!r}: shape {list(shape)} does not fit the signature's {list(wanted)}")


def _single_input(spec: SignatureSpec, form: str) -> str:
    if len(spec.inputs) != 1:
        raise InvalidInput(f"{form} without input names needs a signature with one input, not {len(spec.inputs)}")
    return next(iter(spec.inputs))


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _rows(instances: Any, spec: SignatureSpec) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    if all(isinstance(row, dict) and not _is_b64(row) for row in instances):
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise InvalidInput("every instance must name the same inputs")
        return {k: [row[k] for row in instances] for k in keys}
    if any(isinstance(row, dict) and not _is_b64(row) for row in instances):
        raise InvalidInput("instances mix named (objects) and unnamed values")
    return {_single_input(spec, "'instances'"): instances}


def _columns(inputs: Any, spec: SignatureSpec) -> dict[str, Any]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return dict(inputs)
    return {_single_input(spec, "'inputs'"): inputs}


def _shape_and_values(value: Any, name: str) -> tuple[list[int], list[Any]]:
    """Rectangular nesting -> (shape, row-major leaves)."""
    if not isinstance(value, list):
        return [], [value]
    if not value:
        return [0], []
    parts = [_shape_and_values(item, name) for item in value]
    inner = parts[0][0]
    if any(shape != inner for shape, _ in parts):
        raise InvalidInput(f"input {name!r}: nested lists are not rectangular")
    return [len(value), *inner], [leaf for _, leaves in parts for leaf in leaves]


def _number(leaf: Any, name: str) -> float:
    if isinstance(leaf, bool) or not isinstance(leaf, int | float):
        raise InvalidInput(f"input {name!r}: expected a number, got {type(leaf).__name__}")
    return float(leaf)


def _integer(leaf: Any, name: str, dtype: str) -> int:
    if (
        isinstance(leaf, bool)
        or not isinstance(leaf, int | float)
        or (isinstance(leaf, float) and not leaf.is_integer())
    ):
        raise InvalidInput(f"input {name!r}: expected an integer for {dtype}, got {leaf!r}")
    _, low, high = _INT_FIELDS[dtype]
    number = int(leaf)
    if not low <= number <= high:
        raise InvalidInput(f"input {name!r}: {number} is out of range for {dtype}")
    return number


def _string(leaf: Any, name: str) -> bytes:
    if isinstance(leaf, str):
        return leaf.encode()
    if _is_b64(leaf) and isinstance(leaf["b64"], str):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except binascii.Error as exc:
            raise InvalidInput(f"input {name!r}: invalid base64: {exc}") from exc
    raise InvalidInput(f"input {name!r}: expected a string or {{'b64': ...}}, got {type(leaf).__name__}")


def _tensor(name: str, value: Any, dtype: str) -> Any:
    shape, leaves = _shape_and_values(value, name)
    tensor = tensor_pb2.TensorProto(dtype=tensor_pb2.DataType.Value(dtype) if dtype.startswith("DT_") else 0)
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    if dtype == "DT_FLOAT":
        tensor.float_val.extend(_number(v, name) for v in leaves)
    elif dtype == "DT_DOUBLE":
        tensor.double_val.extend(_number(v, name) for v in leaves)
    elif dtype == "DT_HALF":
        tensor.half_val.extend(struct.unpack("<H", struct.pack("<e", _number(v, name)))[0] for v in leaves)
    elif dtype == "DT_BFLOAT16":
        tensor.half_val.extend(_bfloat16_bits(_number(v, name)) for v in leaves)
    elif dtype in _INT_FIELDS:
        getattr(tensor, _INT_FIELDS[dtype][0]).extend(_integer(v, name, dtype) for v in leaves)
    elif dtype == "DT_BOOL":
        if not all(isinstance(v, bool) for v in leaves):
            raise InvalidInput(f"input {name!r}: expected true/false for DT_BOOL")
        tensor.bool_val.extend(leaves)
    elif dtype == "DT_STRING":
        tensor.string_val.extend(_string(v, name) for v in leaves)
    else:
        raise InvalidInput(f"input {name!r}: dtype {dtype} cannot be given in JSON")
    return tensor


def _bfloat16_bits(value: float) -> int:
    if math.isnan(value):
        return 0x7FC0
    bits: int = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF  # round to nearest even, as TF does
