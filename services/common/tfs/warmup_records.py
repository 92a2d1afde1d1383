"""Warm-up records without TensorFlow: TFRecord framing and ``PredictionLog`` records.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` before a version becomes
AVAILABLE (saved_model_warmup_util.cc). The file is a TFRecord file (tensorflow/core/lib/io/record_writer.cc):
per record, the length as uint64 little-endian, the masked CRC32C of those 8 bytes, the data, and the
masked CRC32C of the data. Each record is a serialized ``PredictionLog`` with a ``predict_log``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import google_crc32c

from services.common.tfs._generated import prediction_log_pb2

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = f"{ASSETS_EXTRA}/{WARMUP_FILE}"  # relative to the version directory
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords: more fails the load
_MASK_DELTA = 0xA282EAD8


class CorruptRecords(ValueError):
    """The bytes are not a well-formed TFRecord file."""


def masked_crc32c(data: bytes) -> int:
    """crc32c::Mask: rotate right by 15 bits and add a constant (record_writer.h)."""
    crc = int(google_crc32c.value(data))
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def encode_records(records: Iterable[bytes]) -> bytes:
    """The TFRecord file holding ``records`` in order."""
    out = bytearray()
    for data in records:
        length = struct.pack("<Q", len(data))
        out += length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))
    return bytes(out)


def decode_records(blob: bytes) -> Iterator[bytes]:
    """The records of a TFRecord file; CorruptRecords on bad framing or a CRC mismatch."""
    offset = 0
    while offset < len(blob):
        header = blob[offset : offset + 12]
        if len(header) < 12:
            raise CorruptRecords(f"truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise CorruptRecords(f"corrupted record length at byte {offset}")
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(blob):
            raise CorruptRecords(f"truncated record at byte {offset}")
        data = blob[start:end]
        if struct.unpack("<I", blob[end : end + 4])[0] != masked_crc32c(data):
            raise CorruptRecords(f"corrupted record data at byte {offset}")
        yield data
        offset = end + 4


def prediction_log(request: Any) -> bytes:
    """One warm-up record: a ``PredictionLog`` whose ``predict_log.request`` is ``request``."""
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(request)
    data: bytes = log.SerializeToString(deterministic=True)
    return data


def warmup_file_bytes(requests: Iterable[Any], *, repeat: int = 1, limit: int = MAX_RECORDS) -> bytes:
    """The warm-up file for ``requests``, each repeated ``repeat`` times, at most ``limit`` records."""
    logs = [prediction_log(request) for request in requests]
    records = [log for log in logs for _ in range(max(repeat, 1))][: min(limit, MAX_RECORDS)]
    return encode_records(records)
