"""Plain values the TF Serving wire layer hands out: no protobuf types leak past this package."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class VersionState(enum.IntEnum):
    """ModelVersionStatus.State, with upstream's numbers. "Loaded" means AVAILABLE now."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    """One version as GetModelStatus reports it.

    ``error_code`` is TF Serving's ``tensorflow.error.Code`` number (0 = OK); an END version with a
    non-zero code failed to load, an END version with 0 was unloaded on purpose.
    """

    version: int
    state: VersionState
    error_code: int
    error_message: str


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: ``dtype`` is the DataType name (``"DT_FLOAT"``).

    ``shape`` is None when the rank is unknown; a dimension of -1 is unknown.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class SignatureSpec:
    """One SignatureDef: what a caller must send and gets back. Compared across versions."""

    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class ModelEntry:
    """One model of models.config.

    ``versions`` non-empty means a ``specific`` version policy with exactly those versions; empty
    means no policy is written, which TF Serving treats as ``latest { num_versions: 1 }``. Reading a
    config maps both ``latest`` and ``all`` to ``()`` (their details are not kept). ``versions`` is
    normalised to a sorted tuple without duplicates and ``labels`` to a dict sorted by label, so two
    entries that render the same text compare equal.
    """

    name: str
    base_path: str
    versions: tuple[int, ...]
    labels: dict[str, int] = field(default_factory=dict)
    platform: str = "tensorflow"

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted({int(v) for v in self.versions})))
        object.__setattr__(self, "labels", {k: int(self.labels[k]) for k in sorted(self.labels)})


@dataclass(frozen=True)
class PredictResult:
    """What Predict answered: the version that served and every numeric output, flattened."""

    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, list[float]]


@dataclass(frozen=True)
class TensorValue:
    """One output tensor as answered: dtype name, shape, and its values flattened row-major.

    ``numbers`` holds numeric values (NaN and infinities kept), ``strings`` DT_STRING values; the other
    is None. A dtype neither numeric nor string has both None.
    """

    dtype: str
    shape: tuple[int, ...]
    numbers: list[float] | None = None
    strings: list[bytes] | None = None


# What predict() accepts per input: a flat float list (1-D), (values, shape), bytes (a scalar
# DT_STRING) or (list of bytes, shape).
PredictInput = (
    list[float]
    | tuple[float, ...]
    | tuple[list[float] | tuple[float, ...], tuple[int, ...] | list[int]]
    | bytes
    | tuple[list[bytes] | tuple[bytes, ...], tuple[int, ...] | list[int]]
)
PredictInputs = Mapping[str, PredictInput]
