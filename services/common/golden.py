"""Golden requests in use: build each request for a version's signatures, judge an answer.

Shared by config_manager (the check before traffic), the puller (generated warm-up) and master
(validation on upload, ``fleetctl golden test``). Pure: no I/O, no TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from services.common.contracts.golden import GoldenChecks, GoldenRequest, GoldenSet, OutputCheck, Tolerance, flatten
from services.common.errors import InvalidInput
from services.common.tfs._generated import predict_pb2
from services.common.tfs.records import SignatureSpec, TensorValue
from services.common.tfs.rest_json import check_shapes, request_from_rest, signature_for

SHOWN_VALUES = 8


@dataclass(frozen=True)
class Verdict:
    """The result of one golden request against one version: ``failures`` empty means passed."""

    request: str
    failures: tuple[str, ...]
    answer: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def build_request(golden: GoldenRequest, signatures: Mapping[str, SignatureSpec]) -> Any:
    """The ``PredictRequest`` of ``golden`` for a version with ``signatures`` (InvalidInput if it does not fit)."""
    if golden.rest is not None:
        return request_from_rest(golden.rest, signatures, signature_name=golden.signature_name)
    try:
        raw = base64.b64decode(golden.predict_request_b64 or "", validate=True)
        request = predict_pb2.PredictRequest.FromString(raw)
    except (binascii.Error, DecodeError) as exc:
        raise InvalidInput(f"request {golden.name!r}: predict_request_b64 is not a PredictRequest: {exc}") from exc
    key, spec = signature_for(signatures, golden.signature_name or request.model_spec.signature_name)
    request.model_spec.signature_name = key
    unknown = sorted(set(request.inputs) - set(spec.inputs))
    missing = sorted(set(spec.inputs) - set(request.inputs))
    if unknown or missing:
        raise InvalidInput(
            f"request {golden.name!r}: inputs do not fit signature {key!r} (unknown {unknown}, missing {missing})"
        )
    check_shapes(request, spec)
    return request


def build_requests(
    golden: GoldenSet, signatures: Mapping[str, SignatureSpec]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """(name, request) for every request that fits ``signatures``, and why the others do not."""
    built: list[tuple[str, Any]] = []
    problems: list[str] = []
    for item in golden.requests:
        try:
            built.append((item.name, build_request(item, signatures)))
        except InvalidInput as exc:
            problems.append(f"{item.name}: {exc.detail}")
    return built, problems


def _close(answer: float, expected: float, tolerance: Tolerance) -> bool:
    if math.isnan(answer) or math.isnan(expected):
        return False
    if math.isinf(answer) or math.isinf(expected):
        return answer == expected
    return abs(answer - expected) <= tolerance.atol + tolerance.rtol * abs(expected)


def _shape_matches(shape: Sequence[int], wanted: Sequence[int]) -> bool:
    return len(shape) == len(wanted) and all(w in (-1, s) for s, w in zip(shape, wanted, strict=True))


def _first_mismatch(answer: Sequence[float], expected: Sequence[float], tolerance: Tolerance) -> str | None:
    if len(answer) != len(expected):
        return f"has {len(answer)} values, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(answer, expected, strict=True)):
        if not _close(got, want, tolerance):
            return f"value [{index}] is {got!r}, expected {want!r} (atol {tolerance.atol}, rtol {tolerance.rtol})"
    return None


def _check_output(name: str, check: OutputCheck, value: TensorValue) -> list[str]:
    failures: list[str] = []
    if check.dtype is not None and value.dtype != check.dtype:
        failures.append(f"output {name!r}: dtype {value.dtype}, expected {check.dtype}")
    if check.shape is not None and not _shape_matches(value.shape, check.shape):
        failures.append(f"output {name!r}: shape {list(value.shape)}, expected {check.shape}")
    numbers = value.numbers
    wants_numbers = check.min is not None or check.max is not None or check.values is not None
    if numbers is None:
        if wants_numbers:
            failures.append(f"output {name!r}: {value.dtype} is not numeric, cannot check values")
        return failures
    if check.min is not None or check.max is not None:
        low = check.min if check.min is not None else -math.inf
        high = check.max if check.max is not None else math.inf
        outside = [(i, v) for i, v in enumerate(numbers) if not low <= v <= high]
        if outside:
            index, got = outside[0]
            failures.append(
                f"output {name!r}: {len(outside)} value(s) outside [{low}, {high}], first [{index}] = {got!r}"
            )
    if check.values is not None:
        why = _first_mismatch(numbers, [float(v) for v in flatten(check.values)], check.tolerance)
        if why:
            failures.append(f"output {name!r}: {why}")
    return failures


def judge(
    checks: GoldenChecks,
    outputs: Mapping[str, TensorValue],
    serving: Mapping[str, TensorValue] | None = None,
) -> list[str]:
    """Every check ``outputs`` fails (empty: passed). ``serving``: the answer of the version serving now."""
    failures: list[str] = []
    for name, check in sorted(checks.outputs.items()):
        if name not in outputs:
            failures.append(f"output {name!r} missing (answered: {sorted(outputs)})")
            continue
        failures.extend(_check_output(name, check, outputs[name]))
    if checks.finite:
        for name, value in sorted(outputs.items()):
            bad = [v for v in value.numbers or () if not math.isfinite(v)]
            if bad:
                failures.append(f"output {name!r}: {len(bad)} value(s) not finite (e.g. {bad[0]!r})")
    if checks.agrees_with_serving is not None and serving is not None:
        for name, old in sorted(serving.items()):
            new = outputs.get(name)
            if old.numbers is None or new is None or new.numbers is None:
                continue
            if new.shape != old.shape:
                failures.append(f"output {name!r}: shape {list(new.shape)}, serving version answers {list(old.shape)}")
                continue
            why = _first_mismatch(new.numbers, old.numbers, checks.agrees_with_serving)
            if why:
                failures.append(f"output {name!r} disagrees with the serving version: {why}")
    return failures


def describe(outputs: Mapping[str, TensorValue]) -> str:
    """A short text of an answer for failed.json and status (first values of each output)."""
    parts = []
    for name, value in sorted(outputs.items()):
        shown: Sequence[object] = (value.numbers if value.numbers is not None else value.strings) or []
        more = "" if len(shown) <= SHOWN_VALUES else f", ... {len(shown)} values"
        head = ", ".join(repr(v) for v in list(shown)[:SHOWN_VALUES])
        parts.append(f"{name} {value.dtype}{list(value.shape)} [{head}{more}]")
    return "; ".join(parts) or "no outputs"
