"""Tiny real SavedModels for tests: the factory lives in services.local_fleet.savedmodels (the fleet's
example model uses it too)."""

from services.local_fleet.savedmodels import (
    CHANGED_INPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    WARMUP_FAULTS,
    CorruptKind,
    WarmupFault,
    install_model,
    write_corrupt_model,
    write_model,
)

__all__ = [
    "CHANGED_INPUT_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "WARMUP_FAULTS",
    "CorruptKind",
    "WarmupFault",
    "install_model",
    "write_corrupt_model",
    "write_model",
]
