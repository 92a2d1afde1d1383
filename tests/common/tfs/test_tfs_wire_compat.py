"""Our .proto subset against tensorflow-serving-api, in one process: same bytes and text both ways.

Every message of the subset is filled from one random value tree into our class and into upstream's
class; the two must serialize to identical bytes (deterministic and not), each must parse the other's
bytes into an equal message, and the text format must match and parse across as well.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor, text_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2 as up_tensor
from tensorflow.core.framework import tensor_shape_pb2 as up_shape
from tensorflow.core.protobuf import meta_graph_pb2 as up_meta
from tensorflow_serving.apis import get_model_metadata_pb2 as up_metadata
from tensorflow_serving.apis import get_model_status_pb2 as up_status
from tensorflow_serving.apis import model_management_pb2 as up_management
from tensorflow_serving.apis import model_pb2 as up_model
from tensorflow_serving.apis import predict_pb2 as up_predict
from tensorflow_serving.apis import status_pb2 as up_status_proto
from tensorflow_serving.config import file_system_storage_path_source_pb2 as up_fs_source
from tensorflow_serving.config import model_server_config_pb2 as up_config

from services.common.tfs._generated import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    meta_graph_pb2,
    model_management_pb2,
    model_pb2,
    model_server_config_pb2,
    predict_pb2,
    status_pb2,
    tensor_pb2,
)

FD = descriptor.FieldDescriptor
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
VersionPolicy = model_server_config_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
UpVersionPolicy = up_fs_source.FileSystemStoragePathSourceConfig.ServableVersionPolicy

PAIRS: list[tuple[type[Message], type[Message]]] = [
    (model_pb2.ModelSpec, up_model.ModelSpec),
    (status_pb2.StatusProto, up_status_proto.StatusProto),
    (get_model_status_pb2.GetModelStatusRequest, up_status.GetModelStatusRequest),
    (get_model_status_pb2.ModelVersionStatus, up_status.ModelVersionStatus),
    (get_model_status_pb2.GetModelStatusResponse, up_status.GetModelStatusResponse),
    (VersionPolicy, UpVersionPolicy),
    (model_server_config_pb2.ModelConfig, up_config.ModelConfig),
    (model_server_config_pb2.ModelConfigList, up_config.ModelConfigList),
    (model_server_config_pb2.ModelServerConfig, up_config.ModelServerConfig),
    (model_management_pb2.ReloadConfigRequest, up_management.ReloadConfigRequest),
    (model_management_pb2.ReloadConfigResponse, up_management.ReloadConfigResponse),
    (model_management_pb2.Metric, up_management.Metric),
    (tensor_pb2.TensorShapeProto, up_shape.TensorShapeProto),
    (tensor_pb2.TensorProto, up_tensor.TensorProto),
    (predict_pb2.PredictRequest, up_predict.PredictRequest),
    (predict_pb2.PredictResponse, up_predict.PredictResponse),
    (meta_graph_pb2.TensorInfo, up_meta.TensorInfo),
    (meta_graph_pb2.SignatureDef, up_meta.SignatureDef),
    (get_model_metadata_pb2.SignatureDefMap, up_metadata.SignatureDefMap),
    (get_model_metadata_pb2.GetModelMetadataRequest, up_metadata.GetModelMetadataRequest),
    (get_model_metadata_pb2.GetModelMetadataResponse, up_metadata.GetModelMetadataResponse),
]
IDS = [ours.DESCRIPTOR.name for ours, _ in PAIRS]

# Upstream fields the subset leaves out on purpose (each is documented in the .proto file).
OMITTED = {
    "tensorflow.serving.ModelConfig.logging_config",
    "tensorflow.serving.PredictRequest.predict_streamed_options",
    "tensorflow.serving.PredictRequest.client_id",
    "tensorflow.serving.PredictRequest.request_options",
    "tensorflow.TensorProto.resource_handle_val",
    "tensorflow.TensorProto.variant_val",
    "tensorflow.TensorInfo.composite_tensor",
}


def _local_name(d: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
    return d.full_name[len(d.file.package) + 1 :]


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    # FieldDescriptor.is_repeated only exists from protobuf 6; the label says it in every release.
    return bool(field.label == FD.LABEL_REPEATED)


def _compare_enum(ours: descriptor.EnumDescriptor, theirs: descriptor.EnumDescriptor) -> None:
    assert _local_name(ours) == _local_name(theirs)
    assert [(v.name, v.number) for v in ours.values] == [(v.name, v.number) for v in theirs.values]


def _compare_message(ours: descriptor.Descriptor, theirs: descriptor.Descriptor, seen: set[str]) -> None:
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    assert _local_name(ours) == _local_name(theirs)
    assert ours.GetOptions().map_entry == theirs.GetOptions().map_entry
    upstream_fields = {f.name for f in theirs.fields}
    missing = {f"{theirs.full_name}.{name}" for name in upstream_fields - {f.name for f in ours.fields}}
    assert missing <= OMITTED, f"fields missing from our {ours.full_name}: {missing - OMITTED}"
    for field in ours.fields:
        other = theirs.fields_by_name[field.name]
        assert (field.number, field.type, _is_repeated(field)) == (other.number, other.type, _is_repeated(other))
        assert field.is_packed == other.is_packed, field.full_name
        assert (field.containing_oneof.name if field.containing_oneof else None) == (
            other.containing_oneof.name if other.containing_oneof else None
        )
        if field.message_type is not None:
            if field.message_type.file.package == "google.protobuf":
                assert field.message_type is other.message_type
            else:
                _compare_message(field.message_type, other.message_type, seen)
        if field.enum_type is not None:
            _compare_enum(field.enum_type, other.enum_type)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=IDS)
def test_descriptors_match_upstream_names_numbers_and_types(ours: type[Message], theirs: type[Message]) -> None:
    _compare_message(ours.DESCRIPTOR, theirs.DESCRIPTOR, set())


def test_enums_match_upstream() -> None:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import error_codes_pb2

    from services.common.tfs._generated import error_codes_pb2 as our_codes

    _compare_enum(tensor_pb2.DataType.DESCRIPTOR, types_pb2.DataType.DESCRIPTOR)
    _compare_enum(our_codes.Code.DESCRIPTOR, error_codes_pb2.Code.DESCRIPTOR)


def test_subset_lives_in_its_own_proto_package() -> None:
    assert model_pb2.ModelSpec.DESCRIPTOR.full_name == "modelfleet.tfs.ModelSpec"
    assert model_pb2.DESCRIPTOR.name == "modelfleet/tfs/model.proto"
    assert up_model.ModelSpec.DESCRIPTOR.full_name == "tensorflow.serving.ModelSpec"


# ---- random values, as plain trees keyed by field name --------------------------------------------

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FD.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FD.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_STRING: st.text(max_size=12),
    FD.TYPE_BYTES: st.binary(max_size=12),
    FD.TYPE_FLOAT: st.floats(width=32, allow_nan=False),
    FD.TYPE_DOUBLE: st.floats(allow_nan=False),
}


def _any_values(depth: int) -> st.SearchStrategy[Any]:
    signature_map = get_model_metadata_pb2.SignatureDefMap
    packed = trees(signature_map.DESCRIPTOR, depth + 1).map(
        lambda tree: ("any", SIGNATURE_DEF_MAP_URL, fill(signature_map(), tree).SerializeToString(deterministic=True))
    )
    opaque = st.tuples(st.just("any"), st.just("type.googleapis.com/example.Unknown"), st.binary(max_size=8))
    return st.one_of(packed, opaque)


def _single(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.type == FD.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Any":
            return _any_values(depth)
        return trees(field.message_type, depth + 1)
    return _SCALARS[field.type]


def _field_values(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _SCALARS[field.message_type.fields_by_name["key"].type]
        value = _single(field.message_type.fields_by_name["value"], depth)
        return st.dictionaries(key, value, max_size=2 if depth < 3 else 0)
    if _is_repeated(field):
        return st.lists(_single(field, depth), max_size=3 if depth < 3 else 0)
    return _single(field, depth)


@st.composite
def _tree(draw: st.DrawFn, message: descriptor.Descriptor, depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    chosen_oneofs = {o.name: draw(st.sampled_from([None, *o.fields])) for o in message.oneofs}
    for field in message.fields:
        if field.containing_oneof is not None:
            if chosen_oneofs[field.containing_oneof.name] is not field:
                continue
        elif depth >= 4 or not draw(st.booleans()):
            continue
        tree[field.name] = draw(_field_values(field, depth))
    return tree


def trees(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random value trees for ``message`` (oneofs respected, bounded depth and sizes)."""
    return _tree(message, depth)


def _fill_value(target: Message, name: str, value: Any) -> None:
    if isinstance(value, tuple) and value[0] == "any":
        getattr(target, name).type_url, getattr(target, name).value = value[1], value[2]
    else:
        fill(getattr(target, name), value)


def fill(message: Message, tree: dict[str, Any]) -> Message:
    """Set ``tree`` into ``message`` by field name (works for our classes and upstream's alike)."""
    for name, value in tree.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        container = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.message_type is None:
                    container[key] = item
                elif isinstance(item, tuple):
                    container[key].type_url, container[key].value = item[1], item[2]
                else:
                    fill(container[key], item)
        elif _is_repeated(field):
            for item in value:
                fill(container.add(), item) if field.message_type is not None else container.append(item)
        elif field.message_type is not None:
            container.SetInParent()
            _fill_value(message, name, value)
        else:
            setattr(message, name, value)
    return message


def _assert_compatible(ours: type[Message], theirs: type[Message], tree: dict[str, Any]) -> None:
    mine, upstream = fill(ours(), tree), fill(theirs(), tree)
    my_bytes = mine.SerializeToString(deterministic=True)
    up_bytes = upstream.SerializeToString(deterministic=True)
    assert my_bytes == up_bytes
    assert mine.SerializeToString() == upstream.SerializeToString()
    assert theirs.FromString(my_bytes) == upstream  # ours -> bytes -> upstream
    assert ours.FromString(up_bytes) == mine  # upstream -> bytes -> ours
    assert ours.FromString(up_bytes).SerializeToString(deterministic=True) == up_bytes

    my_text, up_text = text_format.MessageToString(mine), text_format.MessageToString(upstream)
    assert my_text == up_text
    mine_from_up_text = text_format.Parse(up_text, ours())  # upstream text -> ours
    up_from_my_text = text_format.Parse(my_text, theirs())  # our text -> upstream
    assert text_format.MessageToString(mine_from_up_text) == up_text
    assert text_format.MessageToString(up_from_my_text) == my_text
    assert mine_from_up_text.SerializeToString(deterministic=True) == up_from_my_text.SerializeToString(
        deterministic=True
    )
    if not _has_any(tree):
        # An Any's packed bytes are re-serialized by a text round trip (map order may change), so
        # exact message equality is only asserted where no Any is involved.
        assert mine_from_up_text == mine
        assert up_from_my_text == upstream


def _has_any(value: Any) -> bool:
    if isinstance(value, tuple) and value and value[0] == "any":
        return True
    if isinstance(value, dict):
        return any(_has_any(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_any(v) for v in value)
    return False


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=IDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bytes_and_text_match_upstream_both_ways(
    ours: type[Message], theirs: type[Message], data: st.DataObject
) -> None:
    _assert_compatible(ours, theirs, data.draw(trees(ours.DESCRIPTOR)))


@pytest.mark.slow
@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bytes_and_text_match_upstream_many_examples(
    ours: type[Message], theirs: type[Message], data: st.DataObject
) -> None:
    _assert_compatible(ours, theirs, data.draw(trees(ours.DESCRIPTOR)))


def test_signature_def_any_expands_in_text_like_upstream() -> None:
    """The Any of GetModelMetadata carries upstream's type URL and prints expanded on both sides."""
    tree = {"signature_def": {"serving_default": {"method_name": "tensorflow/serving/predict"}}}
    inner = fill(get_model_metadata_pb2.SignatureDefMap(), tree).SerializeToString()
    response_tree = {"metadata": {"signature_def": ("any", SIGNATURE_DEF_MAP_URL, inner)}}
    text = text_format.MessageToString(fill(get_model_metadata_pb2.GetModelMetadataResponse(), response_tree))
    assert f"[{SIGNATURE_DEF_MAP_URL}]" in text
    _assert_compatible(
        get_model_metadata_pb2.GetModelMetadataResponse, up_metadata.GetModelMetadataResponse, response_tree
    )
