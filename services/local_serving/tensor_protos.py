"""Output tensors as TF Serving writes them: ``Tensor::AsProtoField`` (typed ``*_val`` fields), not
``tensor_content``. predict_util.cc PostProcessPredictionResult uses kAsProtoField unless
``--enable_serialization_as_tensor_content`` is set.
"""

from __future__ import annotations

from typing import Any

# DataType name -> the TensorProto field Tensor::AsProtoField fills (tensorflow/core/framework/tensor.cc).
_FIELD_BY_DTYPE = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_INT32": "int_val",
    "DT_INT16": "int_val",
    "DT_INT8": "int_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
}


def as_proto_field(array: Any) -> Any:
    """A TensorProto for a numpy array (or tf.Tensor) with its values in the typed field, as upstream."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, types_pb2

    if isinstance(array, tf.Tensor):
        dtype = array.dtype
        array = array.numpy()
    else:
        array = np.asarray(array)
        dtype = tf.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    name = types_pb2.DataType.Name(dtype.as_datatype_enum)
    flat = array.reshape(-1)
    if name in ("DT_HALF", "DT_BFLOAT16"):
        # half_val holds the 16-bit patterns.
        proto.half_val.extend(int(bits) for bits in flat.view(np.uint16))
    elif name == "DT_COMPLEX64":
        proto.scomplex_val.extend(float(part) for value in flat for part in (value.real, value.imag))
    elif name == "DT_COMPLEX128":
        proto.dcomplex_val.extend(float(part) for value in flat for part in (value.real, value.imag))
    elif name in _FIELD_BY_DTYPE:
        getattr(proto, _FIELD_BY_DTYPE[name]).extend(flat.tolist())
    else:
        # Resource/variant outputs cannot be served over the wire; fall back to TF's own encoding.
        proto.CopyFrom(tf.make_tensor_proto(array))
    return proto
