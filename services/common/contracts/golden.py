"""Golden requests: ``gs://<bucket>/<prefix>/_fleet/golden/<model>.json``, written only by master.

A golden set is a list of Predict requests with checks on the answers. Every node runs them against a
new version *before* that version can answer a production call (config_manager, ``golden`` module), and
the puller turns them into warm-up records for versions that ship none. The node's copy is
``LOCAL/.fleet/golden/<model>.json`` (written by the puller, read by config_manager).

A request is either TF Serving's REST body (``{"instances": [...]}`` row format or ``{"inputs": ...}``
columnar format, ``signature_name`` optional; strings as ``{"b64": "..."}``) or a binary
``PredictRequest`` in base64 (``predict_request_b64``; its model_spec is replaced when it is sent).
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.contracts.base import Document, is_valid_model_name
from services.common.contracts.local import fleet_dir

GOLDEN_PREFIX = "_fleet/golden/"
MAX_REQUESTS = 100
REQUEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def golden_object_name(prefix: str, model: str) -> str:
    """Bucket object of a model's golden set (``prefix`` without trailing slash, may be empty)."""
    return f"{prefix.strip('/')}/{GOLDEN_PREFIX}{model}.json".lstrip("/")


def golden_dir(local_root: Path) -> Path:
    """The node's copies of the golden sets."""
    return fleet_dir(local_root) / "golden"


def golden_path(local_root: Path, model: str) -> Path:
    return golden_dir(local_root) / f"{model}.json"


def _finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number")


class Tolerance(BaseModel):
    """``|answer - expected| <= atol + rtol * |expected|`` element by element (numpy's isclose)."""

    model_config = ConfigDict(extra="forbid")

    atol: float = Field(default=1e-6, ge=0)
    rtol: float = Field(default=1e-5, ge=0)


class OutputCheck(BaseModel):
    """Checks on one named output. Every field is optional; the output must exist in any case."""

    model_config = ConfigDict(extra="forbid")

    dtype: str | None = Field(default=None, description="DataType name, e.g. DT_FLOAT")
    shape: list[int] | None = Field(default=None, description="exact shape; -1 matches any size")
    min: float | None = None
    max: float | None = None
    values: Any = Field(default=None, description="expected values (nested lists, flattened row-major)")
    tolerance: Tolerance = Field(default_factory=Tolerance)

    @model_validator(mode="after")
    def _sane(self) -> OutputCheck:
        _finite(self.min, "min")
        _finite(self.max, "max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.dtype is not None and not re.fullmatch(r"DT_[A-Z0-9]+", self.dtype):
            raise ValueError(f"dtype {self.dtype!r}: use TensorFlow's DataType name, e.g. DT_FLOAT")
        if self.shape is not None and any(d < -1 for d in self.shape):
            raise ValueError("shape dimensions are sizes or -1")
        if self.values is not None:
            flat = flatten(self.values)
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
                raise ValueError("expected values must be numbers")
        return self


class GoldenChecks(BaseModel):
    """What the answer to one golden request must satisfy."""

    model_config = ConfigDict(extra="forbid")

    outputs: dict[str, OutputCheck] = Field(default_factory=dict, description="outputs that must be present")
    finite: bool = Field(default=True, description="every numeric value of every output is finite")
    agrees_with_serving: Tolerance | None = Field(
        default=None, description="numeric outputs close to what the version serving now answers"
    )


class GoldenRequest(BaseModel):
    """One request and its checks."""

    model_config = ConfigDict(extra="forbid")

    name: str
    signature_name: str = ""
    rest: dict[str, Any] | None = Field(default=None, description="TF Serving REST predict body")
    predict_request_b64: str | None = None
    checks: GoldenChecks = Field(default_factory=GoldenChecks)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not REQUEST_NAME_RE.match(name):
            raise ValueError(f"invalid request name {name!r}: letters, digits, '_', '.', '-' (max 64)")
        return name

    @model_validator(mode="after")
    def _one_body(self) -> GoldenRequest:
        if (self.rest is None) == (self.predict_request_b64 is None):
            raise ValueError("give exactly one of 'rest' (REST predict body) or 'predict_request_b64'")
        if self.rest is not None and ("instances" in self.rest) == ("inputs" in self.rest):
            raise ValueError("a REST body has exactly one of 'instances' (row format) or 'inputs' (columnar)")
        return self

    @property
    def signature(self) -> str:
        """The signature the request names ("" = serving_default, as TF Serving reads it)."""
        if self.signature_name:
            return self.signature_name
        if self.rest is not None and isinstance(self.rest.get("signature_name"), str):
            return str(self.rest["signature_name"])
        return ""


class GoldenSet(Document):
    """The golden requests of one model."""

    model: str
    requests: list[GoldenRequest] = Field(default_factory=list, max_length=MAX_REQUESTS)
    updated_at: datetime | None = None
    updated_by: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, name: str) -> str:
        if not is_valid_model_name(name):
            raise ValueError(f"invalid model name {name!r}")
        return name

    @model_validator(mode="after")
    def _unique(self) -> GoldenSet:
        names = [r.name for r in self.requests]
        if len(names) != len(set(names)):
            raise ValueError("request names must be unique within a model")
        return self

    def digest(self) -> str:
        """Identity of the requests and checks (not of who wrote them when): a verdict is for one digest."""
        body = self.model_dump_json(include={"model", "requests"})
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def flatten(values: Any) -> list[Any]:
    """Nested lists -> a flat row-major list; a scalar -> [scalar]."""
    if isinstance(values, list | tuple):
        out: list[Any] = []
        for item in values:
            out.extend(flatten(item))
        return out
    return [values]
