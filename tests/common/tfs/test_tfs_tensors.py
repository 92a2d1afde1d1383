"""Tensors without numpy, checked against what TensorFlow itself writes and reads."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from services.common.errors import InvalidInput
from services.common.tfs._generated import tensor_pb2
from services.common.tfs.tensors import decode_numeric, dtype_name, encode_input

VALUES = [[1.5, -2.0, 0.0], [3.25, 100.0, -0.5]]


@pytest.mark.parametrize(
    "dtype",
    [
        np.float32,
        np.float64,
        np.int32,
        np.int16,
        np.int8,
        np.uint8,
        np.uint16,
        np.int64,
        np.uint32,
        np.uint64,
        np.float16,
        tf.bfloat16.as_numpy_dtype,
        np.bool_,
    ],
)
def test_decode_reads_what_tensorflow_writes(dtype: type) -> None:
    array = np.array(VALUES).astype(dtype) if dtype is not np.uint8 else np.abs(np.array(VALUES)).astype(dtype)
    expected = [float(v) for v in array.astype(np.float64).ravel()]
    made = tf.make_tensor_proto(array)  # TensorFlow's encoding (tensor_content for most dtypes)
    assert decode_numeric(tensor_pb2.TensorProto.FromString(made.SerializeToString())) == expected

    packed = type(made)(dtype=made.dtype, tensor_shape=made.tensor_shape, tensor_content=array.tobytes())
    assert decode_numeric(tensor_pb2.TensorProto.FromString(packed.SerializeToString())) == expected

    typed = type(made)(dtype=made.dtype, tensor_shape=made.tensor_shape)  # TF Serving's default: *_val
    if array.dtype.itemsize == 2 and array.dtype.kind not in "iu":  # half / bfloat16: raw bits in half_val
        typed.half_val.extend(int(v) for v in array.view(np.uint16).ravel())
    else:
        getattr(typed, _VAL_FIELD[typed.dtype]).extend(array.ravel().tolist())
    assert decode_numeric(tensor_pb2.TensorProto.FromString(typed.SerializeToString())) == expected


_VAL_FIELD = {
    tf.float32.as_datatype_enum: "float_val",
    tf.float64.as_datatype_enum: "double_val",
    tf.int32.as_datatype_enum: "int_val",
    tf.int16.as_datatype_enum: "int_val",
    tf.int8.as_datatype_enum: "int_val",
    tf.uint8.as_datatype_enum: "int_val",
    tf.uint16.as_datatype_enum: "int_val",
    tf.int64.as_datatype_enum: "int64_val",
    tf.uint32.as_datatype_enum: "uint32_val",
    tf.uint64.as_datatype_enum: "uint64_val",
    tf.bool.as_datatype_enum: "bool_val",
}


def test_strings_are_not_numeric() -> None:
    proto = tf.make_tensor_proto([b"a", b"b"])
    assert decode_numeric(tensor_pb2.TensorProto.FromString(proto.SerializeToString())) is None
    assert dtype_name(7) == "DT_STRING"
    assert dtype_name(999) == "DT_999"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (([1.0, 2.0, 3.0, 4.0], (2, 2)), np.array([[1, 2], [3, 4]], dtype=np.float32)),
        ([0.5, 1], np.array([0.5, 1.0], dtype=np.float32)),
        ((3.0,), np.array([3.0], dtype=np.float32)),
        (b"query text", np.array(b"query text", dtype=object)),
        (([b"a", b"b"], (2, 1)), np.array([[b"a"], [b"b"]], dtype=object)),
    ],
    ids=["float-shaped", "flat-list", "flat-tuple", "bytes-scalar", "bytes-shaped"],
)
def test_tensorflow_reads_the_inputs_we_encode(value: object, expected: np.ndarray) -> None:
    ours = encode_input("x", value)  # type: ignore[arg-type]
    upstream = tf.make_ndarray(tf.make_tensor_proto(0).FromString(ours.SerializeToString()))
    assert upstream.dtype == expected.dtype
    assert upstream.shape == expected.shape
    assert upstream.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "value",
    [([1.0, 2.0], (3,)), ([1.0, 2.0], (-1, 2)), ["a"], [True, False], ([1.0, b"x"], (2,))],
    ids=["shape-too-big", "negative-dim", "strings-in-flat-list", "bools", "mixed"],
)
def test_bad_inputs_are_refused_before_sending(value: object) -> None:
    with pytest.raises(InvalidInput):
        encode_input("x", value)  # type: ignore[arg-type]
