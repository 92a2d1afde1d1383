"""A SavedModel's serving signatures read straight from ``saved_model.pb``, without TensorFlow and without
reading the graph.

config_manager must know a new version's input signature *before* the version enters models.config:
once loaded, it takes every unversioned ("latest") call, so a changed signature would break callers for
as long as it takes to notice. TF Serving answers GetModelMetadata from the MetaGraphDef it loaded —
the one whose tags are exactly ``{"serve"}`` — and that MetaGraphDef's ``signature_def`` map is in the
file. This module walks the protobuf wire format of ``SavedModel`` (``meta_graphs`` = 2) →
``MetaGraphDef`` (``meta_info_def`` = 1 with ``tags`` = 4, ``signature_def`` = 5), seeking past every
other field (the graph itself can be gigabytes), and parses the map entries with the project's own
``SignatureDefMap`` (same field numbers as upstream's, ``signature_def`` = 1): memory stays at the size
of the signatures whatever the size of the model.

``saved_model.pbtxt`` (text format) is not read here; callers fall back to asking the server once the
version is loaded.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from services.common.tfs._generated import get_model_metadata_pb2
from services.common.tfs.records import SignatureSpec
from services.common.tfs.tensors import signature_specs

__all__ = ["SERVE_TAGS", "SavedModelUnreadable", "read_serving_signatures", "signatures_from_stream"]

SERVE_TAGS = frozenset({"serve"})
VARINT, I64, LEN, I32 = 0, 1, 2, 5
FIELD_LIMIT = 64 << 20  # a signature or meta-info field larger than this is not believed


class SavedModelUnreadable(ValueError):
    """The file is missing, truncated, not a SavedModel, or has no MetaGraphDef with the tags."""


def read_serving_signatures(version_dir: Path, tags: Iterable[str] = SERVE_TAGS) -> dict[str, SignatureSpec]:
    """Signatures of the MetaGraphDef tagged exactly ``tags`` in ``version_dir/saved_model.pb``."""
    path = version_dir / "saved_model.pb"
    try:
        with open(path, "rb") as f:
            return signatures_from_stream(f, str(path), tags)
    except OSError as exc:
        raise SavedModelUnreadable(f"{path}: {exc.strerror or exc}") from exc


def signatures_from_stream(f: BinaryIO, what: str, tags: Iterable[str] = SERVE_TAGS) -> dict[str, SignatureSpec]:
    """The same from any seekable stream of ``saved_model.pb`` (a local file, or a bucket object read by
    ranges: only the fields walked are fetched); ``what`` names it in errors."""
    wanted = frozenset(tags)
    size = f.seek(0, 2)
    f.seek(0)
    while f.tell() < size:
        field, wire = _tag(f)
        if field == 2 and wire == LEN:
            length = _varint(f)
            end = _bounded_end(f, length, size)
            graph_tags, entries = _meta_graph(f, end)
            if graph_tags == wanted:
                return _signatures(entries)
            f.seek(end)
        else:
            _skip(f, wire, size)
    raise SavedModelUnreadable(f"{what}: no MetaGraphDef tagged {sorted(wanted)}")


def _meta_graph(f: BinaryIO, end: int) -> tuple[frozenset[str], list[bytes]]:
    tags: frozenset[str] = frozenset()
    entries: list[bytes] = []
    while f.tell() < end:
        field, wire = _tag(f)
        if wire == LEN and field in (1, 5):
            data = _read(f, _varint(f), end)
            if field == 1:
                tags = frozenset(_strings(data, 4))
            else:
                entries.append(data)
        else:
            _skip(f, wire, end)
    if f.tell() != end:
        raise SavedModelUnreadable("MetaGraphDef overruns its length")
    return tags, entries


def _signatures(entries: list[bytes]) -> dict[str, SignatureSpec]:
    # Re-frame MetaGraphDef.signature_def (field 5) entries as SignatureDefMap.signature_def (field 1).
    framed = b"".join(b"\x0a" + _encode_varint(len(entry)) + entry for entry in entries)
    try:
        signature_map = get_model_metadata_pb2.SignatureDefMap.FromString(framed)
    except Exception as exc:  # protobuf's DecodeError
        raise SavedModelUnreadable(f"signature_def does not parse: {exc}") from exc
    return signature_specs(signature_map.signature_def)


def _strings(data: bytes, wanted_field: int) -> list[str]:
    """Every length-delimited ``wanted_field`` of a small message held in memory, as text."""
    found = []
    f = io.BytesIO(data)
    while f.tell() < len(data):
        field, wire = _tag(f)
        if field == wanted_field and wire == LEN:
            found.append(_read(f, _varint(f), len(data)).decode("utf-8", "replace"))
        else:
            _skip(f, wire, len(data))
    return found


def _tag(f: BinaryIO) -> tuple[int, int]:
    key = _varint(f)
    return key >> 3, key & 7


def _skip(f: BinaryIO, wire: int, end: int) -> None:
    if wire == VARINT:
        _varint(f)
        return
    step = {I64: 8, I32: 4}.get(wire)
    if step is None:
        if wire != LEN:
            raise SavedModelUnreadable(f"unsupported wire type {wire}")
        step = _varint(f)
    f.seek(_bounded_end(f, step, end))


def _bounded_end(f: BinaryIO, length: int, end: int) -> int:
    stop = f.tell() + length
    if stop > end:
        raise SavedModelUnreadable("field runs past the end of the file (truncated upload?)")
    return stop


def _read(f: BinaryIO, length: int, end: int) -> bytes:
    if length > FIELD_LIMIT:
        raise SavedModelUnreadable(f"field of {length} bytes where a small one is expected")
    _bounded_end(f, length, end)
    data = f.read(length)
    if len(data) != length:
        raise SavedModelUnreadable("file is truncated")
    return data


def _varint(f: BinaryIO) -> int:
    value = 0
    for shift in range(0, 64, 7):
        byte = f.read(1)
        if not byte:
            raise SavedModelUnreadable("file is truncated")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise SavedModelUnreadable("varint longer than 10 bytes")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
