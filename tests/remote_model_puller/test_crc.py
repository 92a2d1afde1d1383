"""Combining range CRCs gives the CRC32C GCS reports for the whole object."""

from __future__ import annotations

import base64
import itertools

import google_crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from services.remote_model_puller.crc import combine_parts, from_gcs_base64, to_gcs_base64


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6))
def test_combined_range_crcs_equal_the_whole_object_crc(data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    parts = [(google_crc32c.value(data[a:b]), b - a) for a, b in itertools.pairwise(points)]
    assert combine_parts(parts) == google_crc32c.value(data)


def test_gcs_base64_form_round_trips() -> None:
    crc = google_crc32c.value(b"hello world")
    assert to_gcs_base64(crc) == base64.b64encode(google_crc32c.Checksum(b"hello world").digest()).decode()
    assert from_gcs_base64(to_gcs_base64(crc)) == crc
