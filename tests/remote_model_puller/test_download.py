"""The download engine on its own: byte-exact files whatever the size and alignment, with O_DIRECT, through
the page cache, and when the filesystem refuses O_DIRECT at open or at the first write."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from google.cloud import storage

from services.remote_model_puller import objectfile
from services.remote_model_puller.download import Downloader, EngineOptions, GenerationChanged, ObjectSpec, Progress
from services.remote_model_puller.native import HashBuffer, crc32c_implementation
from services.remote_model_puller.objectfile import BIG_OBJECT_BYTES
from services.remote_model_puller.sdkreader import SdkRangeReader
from tests.support.gcs import FakeGcs

KiB = 1 << 10
BUFFER = 64 * KiB
RANGE = 256 * KiB
# Small objects (page cache): empty, under a block, one block, a block and a byte, a buffer and a byte,
# several ranges with an odd tail. Big ones (O_DIRECT): a block-aligned size and an odd one.
SIZES = [0, 1, 4095, 4096, 4097, BUFFER + 1, 3 * RANGE + 12345, BIG_OBJECT_BYTES, BIG_OBJECT_BYTES + 12345]


def upload(bucket: storage.Bucket) -> tuple[list[ObjectSpec], dict[str, bytes]]:
    specs, expected = [], {}
    for size in SIZES:
        data = os.urandom(size)
        blob = bucket.blob(f"m/1/part-{size}")
        blob.upload_from_string(data)
        blob.reload()
        relative = f"sub/part-{size}" if size % 2 else f"part-{size}"
        specs.append(ObjectSpec(blob.name, relative, size, int(blob.generation or 0), blob.crc32c))
        expected[relative] = data
    return specs, expected


def fetch(
    fake_gcs: FakeGcs, bucket: storage.Bucket, specs: list[ObjectSpec], dest: Path, *, sdk: bool = False, **options: Any
) -> Progress:
    reader = SdkRangeReader(client=bucket.client, bucket=bucket.name, timeout=10, buffer_bytes=BUFFER) if sdk else None
    engine = Downloader(
        endpoint=fake_gcs.url,
        bucket=bucket.name,
        options=EngineOptions(workers=4, range_bytes=RANGE, buffer_bytes=BUFFER, timeout_seconds=10, **options),
        reader=reader,
    )
    progress = Progress(bytes_total=sum(s.size for s in specs))
    try:
        engine.download_version(specs, dest, progress=progress, cancel=threading.Event())
    finally:
        engine.close()
    return progress


def files(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("direct_io", "sdk"), [(True, False), (False, False), (True, True)])
def test_every_size_arrives_byte_exact(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path, direct_io: bool, sdk: bool
) -> None:
    """Both engines (the native media client; FLEET_DOWNLOAD_ENGINE=sdk) through the same sink."""
    specs, expected = upload(bucket)
    progress = fetch(fake_gcs, bucket, specs, tmp_path / "out", sdk=sdk, direct_io=direct_io)
    assert files(tmp_path / "out") == expected  # sizes included: O_DIRECT padding is trimmed
    assert progress.bytes_done == progress.bytes_total


def test_direct_io_refused_at_open_falls_back_to_the_page_cache(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    refused: list[str] = []

    def no_direct_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECT:
            refused.append(str(path))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(objectfile.os, "open", no_direct_open)
    specs, expected = upload(bucket)
    fetch(fake_gcs, bucket, specs, tmp_path / "out", direct_io=True)
    assert refused, "the engine asked for O_DIRECT"
    assert files(tmp_path / "out") == expected


def test_direct_io_refused_at_write_falls_back_to_the_page_cache(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite
    refused: list[int] = []

    def no_direct_pwrite(fd: int, data: Any, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(objectfile.os, "pwrite", no_direct_pwrite)
    specs, expected = upload(bucket)
    fetch(fake_gcs, bucket, specs, tmp_path / "out", direct_io=True)
    assert refused, "the first write went out with O_DIRECT"
    assert files(tmp_path / "out") == expected


def test_options_refuse_sizes_o_direct_cannot_use() -> None:
    with pytest.raises(ValueError, match="multiple of 4096"):
        EngineOptions(buffer_bytes=100_000)
    with pytest.raises(ValueError, match="multiple of 4096"):
        EngineOptions(range_bytes=0)


def test_hash_buffer_crc_matches_google_crc32c_and_pads_with_zeros() -> None:
    buffer = HashBuffer(2 * 4096)
    data = os.urandom(5000)
    buffer.view[: len(data)] = data
    buffer.view[len(data) :] = b"\xff" * (len(buffer) - len(data))
    assert buffer.extend_crc(0, len(data)) == google_crc32c.value(data)
    assert buffer.extend_crc(1234, 17) == google_crc32c.extend(1234, data[:17])
    padded = buffer.padded(len(data), 4096)
    assert len(padded) == 8192 and bytes(padded[: len(data)]) == data and not any(padded[len(data) :])
    assert crc32c_implementation() == "native"  # the wheel's C library is found on supported platforms
    with pytest.raises(ValueError):
        HashBuffer(1000)


def test_sdk_engine_reports_a_replaced_object_as_changed(
    fake_gcs: FakeGcs, bucket: storage.Bucket, tmp_path: Path
) -> None:
    blob = bucket.blob("m/1/saved_model.pb")
    blob.upload_from_string(b"first")
    blob.reload()
    spec = ObjectSpec(blob.name, "saved_model.pb", 5, int(blob.generation or 0), blob.crc32c)
    bucket.blob("m/1/saved_model.pb").upload_from_string(b"other")  # a new generation replaces it
    with pytest.raises(GenerationChanged):
        fetch(fake_gcs, bucket, [spec], tmp_path / "out", sdk=True)
