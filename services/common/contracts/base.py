"""Common base of the contract documents."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict

from services.common.errors import InvalidInput

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1

# Model names: what is safe as a directory name and a TF Serving model name. Names beginning with `_` or
# `.` are reserved under the models prefix (`_fleet/`, `.tmp`), never models.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def utcnow() -> datetime:
    """Timezone-aware now, the only clock contracts use."""
    return datetime.now(UTC)


def is_valid_model_name(name: str) -> bool:
    """True for a name usable as a model (and directory) name."""
    return bool(MODEL_NAME_RE.match(name)) and ".." not in name


def validate_model_name(name: str) -> str:
    """Return ``name`` or raise InvalidInput explaining the rule."""
    if not is_valid_model_name(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (max 128), not starting with '_' or '.'"
        )
    return name


class Document(BaseModel):
    """Base of every contract: lenient reads (unknown fields ignored), a schema_version."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Parse a document; raises pydantic.ValidationError on invalid content."""
        return cls.model_validate_json(data)

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read a document from a file (FileNotFoundError, ValidationError propagate)."""
        return cls.from_json(path.read_bytes())

    def to_json(self) -> str:
        """Strict, stable serialisation used for every write."""
        return self.model_dump_json(indent=2, by_alias=True) + "\n"
