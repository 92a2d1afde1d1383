"""Golden requests: REST bodies -> PredictRequest, answers judged, warm-up records upstream can read."""

from __future__ import annotations

import base64
import math

import pytest
from pydantic import ValidationError

from services.common.contracts.golden import GoldenChecks, GoldenRequest, GoldenSet, OutputCheck, Tolerance
from services.common.errors import InvalidInput
from services.common.golden import build_request, build_requests, describe, judge
from services.common.tfs._generated import predict_pb2
from services.common.tfs.records import SignatureSpec, TensorSpec, TensorValue
from services.common.tfs.warmup_records import CorruptRecords, decode_records, warmup_file_bytes

SIGS = {
    "serving_default": SignatureSpec(
        method_name="tensorflow/serving/predict",
        inputs={"x": TensorSpec("x:0", "DT_FLOAT", (-1, 1))},
        outputs={"y": TensorSpec("y:0", "DT_FLOAT", (-1, 1))},
    ),
    "multi": SignatureSpec(
        method_name="tensorflow/serving/predict",
        inputs={
            "ids": TensorSpec("ids:0", "DT_INT64", (-1,)),
            "query": TensorSpec("q:0", "DT_STRING", (-1,)),
            "mask": TensorSpec("m:0", "DT_BOOL", (-1,)),
        },
        outputs={"score": TensorSpec("s:0", "DT_FLOAT", (-1,))},
    ),
}


def golden(rest: dict[str, object], **checks: object) -> GoldenRequest:
    return GoldenRequest(name="r1", rest=rest, checks=GoldenChecks.model_validate(checks))


def test_row_format_single_input_builds_the_tensor_tf_serving_builds() -> None:
    request = build_request(golden({"instances": [[1.0], [2.5]]}), SIGS)
    tensor = request.inputs["x"]
    assert request.model_spec.signature_name == "serving_default"
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 1]
    assert list(tensor.float_val) == [1.0, 2.5]
    assert tensor.dtype == 1  # DT_FLOAT


def test_row_and_columnar_named_inputs_take_dtypes_from_the_signature() -> None:
    rows = {
        "signature_name": "multi",
        "instances": [
            {"ids": 3, "query": "shoes", "mask": True},
            {"ids": 4, "query": {"b64": base64.b64encode(b"\x00bin").decode()}, "mask": False},
        ],
    }
    columns = {"signature_name": "multi", "inputs": {"ids": [3, 4], "query": ["shoes", "x"], "mask": [True, False]}}
    for body in (rows, columns):
        request = build_request(golden(body), SIGS)
        assert list(request.inputs["ids"].int64_val) == [3, 4]
        assert list(request.inputs["mask"].bool_val) == [True, False]
        assert request.inputs["query"].string_val[0] == b"shoes"
    assert build_request(golden(rows), SIGS).inputs["query"].string_val[1] == b"\x00bin"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1.0], [2.0, 3.0]]}, "not rectangular"),
        ({"signature_name": "nope", "instances": [[1.0]]}, "'nope' not found"),
        ({"inputs": {"z": [1.0]}}, "'z' is not in signature"),
        ({"signature_name": "multi", "inputs": {"ids": [1.5], "query": ["a"], "mask": [True]}}, "expected an integer"),
        ({"signature_name": "multi", "inputs": {"ids": [1]}}, "needs inputs"),
        ({"instances": [["a"]]}, "expected a number"),
        ({"signature_name": "multi", "instances": [1, 2]}, "one input"),
        ({"instances": [[1.0, 2.0]]}, r"shape \[1, 2\] does not fit the signature's \[-1, 1\]"),
        ({"instances": [1.0]}, "shape"),
    ],
)
def test_a_request_that_does_not_fit_the_signature_is_refused_with_the_reason(
    body: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        build_request(golden(body), SIGS)


def test_binary_requests_are_checked_against_the_signature_too() -> None:
    request = predict_pb2.PredictRequest()
    request.inputs["x"].dtype = 1
    request.inputs["x"].float_val.append(1.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].tensor_shape.dim.add().size = 1
    item = GoldenRequest(name="bin", predict_request_b64=base64.b64encode(request.SerializeToString()).decode())
    assert build_request(item, SIGS).model_spec.signature_name == "serving_default"
    bad = GoldenRequest(name="bad", predict_request_b64=base64.b64encode(b"\xff\xff").decode())
    built, problems = build_requests(GoldenSet(model="m", requests=[item, bad]), SIGS)
    assert [name for name, _ in built] == ["bin"] and "not a PredictRequest" in problems[0]


def test_the_document_refuses_ambiguous_or_unsafe_content() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        GoldenRequest(name="r", rest={"instances": [1]}, predict_request_b64="AA==")
    with pytest.raises(ValidationError, match="exactly one of 'instances'"):
        GoldenRequest(name="r", rest={"instances": [1], "inputs": [1]})
    with pytest.raises(ValidationError, match="unique"):
        GoldenSet(model="m", requests=[golden({"instances": [1]}), golden({"instances": [2]})])
    with pytest.raises(ValidationError, match="above max"):
        OutputCheck(min=2, max=1)
    with pytest.raises(ValidationError, match="invalid model name"):
        GoldenSet(model="_fleet")
    same = GoldenSet(model="m", requests=[golden({"instances": [1]})])
    assert same.digest() == same.model_copy(update={"updated_by": "bob"}).digest()


def answer(*values: float, shape: tuple[int, ...] | None = None) -> dict[str, TensorValue]:
    return {"y": TensorValue("DT_FLOAT", shape or (len(values), 1), numbers=list(values))}


def test_judge_finds_every_kind_of_wrong_answer() -> None:
    checks = GoldenChecks(outputs={"y": OutputCheck(dtype="DT_FLOAT", shape=[-1, 1], min=0, max=10)})
    assert judge(checks, answer(1.0, 2.0)) == []
    assert "not finite" in judge(checks, answer(1.0, math.nan))[-1]
    assert "outside [0.0, 10.0]" in judge(checks, answer(1.0, 11.0))[0]
    assert "shape [2]" in judge(checks, answer(1.0, 2.0, shape=(2,)))[0]
    assert "missing" in judge(checks, {"z": answer(1.0)["y"]})[0]
    ints = {"y": TensorValue("DT_INT64", (1, 1), numbers=[1.0])}
    assert "dtype DT_INT64, expected DT_FLOAT" in judge(checks, ints)[0]


def test_judge_compares_expected_values_and_the_serving_version_within_tolerance() -> None:
    expected = GoldenChecks(outputs={"y": OutputCheck(values=[[2.0], [4.0]], tolerance=Tolerance(atol=0, rtol=0.01))})
    assert judge(expected, answer(2.01, 3.99)) == []
    assert "value [1] is 4.1" in judge(expected, answer(2.0, 4.1))[0]
    agrees = GoldenChecks(agrees_with_serving=Tolerance(atol=0.05, rtol=0))
    assert judge(agrees, answer(1.0, 2.0), serving=answer(1.04, 2.0)) == []
    assert "disagrees with the serving version" in judge(agrees, answer(1.0, 2.0), serving=answer(1.1, 2.0))[0]
    assert judge(agrees, answer(1.0), serving=None) == []  # nothing serves yet: nothing to agree with
    assert describe(answer(1.0, math.nan)) == "y DT_FLOAT[2, 1] [1.0, nan]"


def test_generated_warmup_file_is_what_upstream_reads() -> None:
    """TensorFlow's record reader and tensorflow-serving-api's PredictionLog parse the file."""
    tf = pytest.importorskip("tensorflow")
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    from tensorflow.python.lib.io import _pywrap_record_io

    request = build_request(golden({"instances": [[1.0], [2.0]]}), SIGS)
    blob = warmup_file_bytes([request], repeat=3)
    assert len(list(decode_records(blob))) == 3
    path = f"{tf.compat.v1.test.get_temp_dir()}/tf_serving_warmup_requests"
    with open(path, "wb") as f:
        f.write(blob)
    records = list(_pywrap_record_io.RecordIterator(path, ""))
    assert len(records) == 3
    upstream = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert upstream.WhichOneof("log_type") == "predict_log"
    assert upstream.predict_log.request.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )
    assert list(upstream.predict_log.request.inputs["x"].float_val) == [1.0, 2.0]
    with pytest.raises(CorruptRecords, match="corrupted record data"):
        list(decode_records(blob[:-1] + bytes([blob[-1] ^ 1])))
    assert len(list(decode_records(warmup_file_bytes([request] * 5, repeat=300)))) == 1000
