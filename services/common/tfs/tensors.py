"""TensorProto in and out without numpy, and SignatureDef -> :class:`SignatureSpec`.

Outputs may arrive either in the typed ``*_val`` fields (TF Serving's default) or packed in
``tensor_content`` (what ``tf.make_tensor_proto`` writes); both are read. TensorFlow's rule that a
``*_val`` field shorter than the shape repeats its last value is honoured.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from services.common.errors import InvalidInput
from services.common.tfs._generated import tensor_pb2
from services.common.tfs.records import PredictInput, SignatureSpec, TensorSpec, TensorValue

# dtype name -> (TensorProto field holding values, struct code for tensor_content)
_NUMERIC: dict[str, tuple[str, str]] = {
    "DT_FLOAT": ("float_val", "f"),
    "DT_DOUBLE": ("double_val", "d"),
    "DT_INT32": ("int_val", "i"),
    "DT_INT16": ("int_val", "h"),
    "DT_INT8": ("int_val", "b"),
    "DT_UINT8": ("int_val", "B"),
    "DT_UINT16": ("int_val", "H"),
    "DT_INT64": ("int64_val", "q"),
    "DT_UINT32": ("uint32_val", "I"),
    "DT_UINT64": ("uint64_val", "Q"),
    "DT_BOOL": ("bool_val", "?"),
    "DT_HALF": ("half_val", "e"),
    "DT_BFLOAT16": ("half_val", "H"),
}


def dtype_name(number: int) -> str:
    """``DataType`` number -> name (``1`` -> ``"DT_FLOAT"``); unknown numbers give ``"DT_<n>"``."""
    try:
        return str(tensor_pb2.DataType.Name(number))
    except ValueError:
        return f"DT_{number}"


def _shape_of(value: Sequence[Any], shape: Sequence[int], name: str) -> list[int]:
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims) or math.prod(dims) != len(value):
        raise InvalidInput(f"input {name!r}: shape {tuple(dims)} does not hold {len(value)} values")
    return dims


def encode_input(name: str, value: PredictInput) -> Message:
    """A TensorProto for one predict input.

    Accepted: a flat list/tuple of numbers (a 1-D DT_FLOAT), ``(values, shape)`` with numbers
    (DT_FLOAT) or bytes (DT_STRING), and ``bytes`` (a scalar DT_STRING). Numbers are sent as float32.
    """
    tensor = tensor_pb2.TensorProto()
    if isinstance(value, bytes):
        values: Sequence[Any] = [value]
        dims: list[int] = []
    elif len(value) == 2 and isinstance(value[0], list | tuple) and isinstance(value[1], list | tuple):
        values = value[0]
        dims = _shape_of(values, value[1], name)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        values = value
        dims = [len(values)]
    else:
        raise InvalidInput(f"input {name!r}: expected numbers, (values, shape) or bytes")
    if all(isinstance(v, bytes) for v in values) and (values or isinstance(value, bytes)):
        tensor.dtype = tensor_pb2.DT_STRING
        tensor.string_val.extend(values)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        tensor.dtype = tensor_pb2.DT_FLOAT
        tensor.float_val.extend(float(v) for v in values)
    else:
        raise InvalidInput(f"input {name!r}: values must be all numbers or all bytes")
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    message: Message = tensor
    return message


def _bfloat16_to_float(bits: int) -> float:
    value: float = struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]
    return value


def decode_numeric(tensor: Any) -> list[float] | None:
    """The values of a numeric TensorProto, flattened, as floats; None for strings and the rest."""
    name = dtype_name(tensor.dtype)
    if name not in _NUMERIC:
        return None
    field, code = _NUMERIC[name]
    dims = [d.size for d in tensor.tensor_shape.dim]
    count = math.prod(dims) if all(d >= 0 for d in dims) else None
    if tensor.tensor_content:
        size = struct.calcsize(code)
        raw = tensor.tensor_content[: len(tensor.tensor_content) - len(tensor.tensor_content) % size]
        values: list[Any] = [v for (v,) in struct.iter_unpack("<" + code, raw)]
    else:
        values = list(getattr(tensor, field))
        if name == "DT_HALF":
            values = [struct.unpack("<e", struct.pack("<H", v & 0xFFFF))[0] for v in values]
    if name == "DT_BFLOAT16":
        values = [_bfloat16_to_float(v) for v in values]
    if count is not None and len(values) < count:
        values.extend([values[-1] if values else 0] * (count - len(values)))
    return [float(v) for v in values]


def decode_tensor(tensor: Any) -> TensorValue:
    """A TensorProto as a :class:`TensorValue` (typed ``*_val`` fields or ``tensor_content``)."""
    name = dtype_name(tensor.dtype)
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if name == "DT_STRING":
        strings = [bytes(v) for v in tensor.string_val]
        count = math.prod(shape)
        if 0 < len(strings) < count:
            strings.extend([strings[-1]] * (count - len(strings)))
        return TensorValue(dtype=name, shape=shape, strings=strings)
    return TensorValue(dtype=name, shape=shape, numbers=decode_numeric(tensor))


def tensor_spec(info: Any) -> TensorSpec:
    """A TensorInfo as a :class:`TensorSpec` (a sparse tensor is named by its values tensor)."""
    if info.WhichOneof("encoding") == "coo_sparse":
        tensor_name = info.coo_sparse.values_tensor_name
    else:
        tensor_name = info.name
    shape_proto = info.tensor_shape
    shape = None if shape_proto.unknown_rank else tuple(int(d.size) for d in shape_proto.dim)
    return TensorSpec(name=tensor_name, dtype=dtype_name(info.dtype), shape=shape)


def signature_specs(signature_defs: Mapping[str, Any]) -> dict[str, SignatureSpec]:
    """``SignatureDefMap.signature_def`` as :class:`SignatureSpec` values, sorted by signature name."""
    return {
        key: SignatureSpec(
            method_name=sig.method_name,
            inputs={k: tensor_spec(sig.inputs[k]) for k in sorted(sig.inputs)},
            outputs={k: tensor_spec(sig.outputs[k]) for k in sorted(sig.outputs)},
        )
        for key, sig in sorted(signature_defs.items())
    }
