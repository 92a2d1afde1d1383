"""Input signatures of ``serving_default``: what a caller must send, compared across versions.

A version whose input signature differs from the one serving now would break every caller the
moment a label moves to it or the old version leaves, so the planner holds such a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.tfs import SignatureSpec

SERVING_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class InputSignature:
    """``serving_default``'s inputs as (name, dtype, shape) triples, sorted by name.

    ``missing`` is True when the version has no ``serving_default`` at all.
    """

    inputs: tuple[tuple[str, str, tuple[int, ...] | None], ...]
    missing: bool = False

    def describe(self) -> str:
        """Short human form, e.g. ``x:DT_FLOAT[-1,1]``."""
        if self.missing:
            return f"no {SERVING_SIGNATURE} signature"
        parts = []
        for name, dtype, shape in self.inputs:
            dims = "?" if shape is None else ",".join(str(d) for d in shape)
            parts.append(f"{name}:{dtype}[{dims}]")
        return " ".join(parts) or "(no inputs)"


def input_signature(signatures: Mapping[str, SignatureSpec]) -> InputSignature:
    """The :class:`InputSignature` of ``serving_default`` out of GetModelMetadata's signatures."""
    spec = signatures.get(SERVING_SIGNATURE)
    if spec is None:
        return InputSignature(inputs=(), missing=True)
    return InputSignature(
        inputs=tuple(sorted((name, tensor.dtype, tensor.shape) for name, tensor in spec.inputs.items()))
    )


def signature_change(old: InputSignature, new: InputSignature) -> str | None:
    """None when a caller of ``old`` can call ``new`` unchanged; else what changed, for status."""
    if old == new:
        return None
    return f"input signature of {SERVING_SIGNATURE} changed: {old.describe()} -> {new.describe()}"
