"""Golden sets reach the node (mirror of ``_fleet/golden/``) and become warm-up records the server replays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from google.cloud import storage

from services.common.contracts import Manifest
from services.common.contracts.golden import GoldenSet, golden_object_name, golden_path
from services.common.contracts.local import manifest_path
from services.common.gcs import list_objects
from services.common.tfs.warmup_records import WARMUP_PATH, decode_records
from services.remote_model_puller.golden import GoldenMirror, add_generated_warmup
from services.remote_model_puller.sync import SyncWorker
from tests.support.savedmodels import write_model


def golden(model: str = "m", *bodies: dict[str, object]) -> GoldenSet:
    requests = [{"name": f"r{i}", "rest": body} for i, body in enumerate(bodies or ({"instances": [[1.0]]},))]
    return GoldenSet.model_validate({"model": model, "requests": requests})


def test_generated_warmup_is_replayed_by_the_server_before_available(tmp_path: Path) -> None:
    from services.local_serving.metrics import WARMUP_RECORDS_READ, Metrics
    from services.local_serving.servable import load_servable

    staged = write_model(tmp_path / "m", 1)
    # The second request names an input the version does not have: it is left out, not written.
    written = add_generated_warmup(staged, golden("m", {"instances": [[1.0]]}, {"inputs": {"z": [1]}}), repeat=3)
    assert written == WARMUP_PATH
    assert len(list(decode_records((staged / WARMUP_PATH).read_bytes()))) == 3
    metrics = Metrics.isolated()
    load_servable("m", 1, staged, metrics=metrics)
    assert metrics.value(WARMUP_RECORDS_READ, str(staged), "OK") == 3


def test_a_version_with_its_own_warmup_or_no_fitting_request_is_left_alone(tmp_path: Path) -> None:
    own = write_model(tmp_path / "m", 1, warmup_requests=2)
    before = (own / WARMUP_PATH).read_bytes()
    assert add_generated_warmup(own, golden(), repeat=5) is None
    assert (own / WARMUP_PATH).read_bytes() == before
    bare = write_model(tmp_path / "m", 2)
    assert add_generated_warmup(bare, golden("m", {"inputs": {"z": [1]}}), repeat=5) is None
    assert add_generated_warmup(bare, None, repeat=5) is None
    assert not (bare / "assets.extra").exists()


async def test_the_mirror_follows_the_bucket_and_keeps_the_last_good_copy(
    bucket: storage.Bucket, gcs_client: storage.Client, tmp_path: Path
) -> None:
    prefix = "models/"
    mirror = GoldenMirror(client=gcs_client, bucket=bucket.name, prefix=prefix, timeout=10, root=tmp_path)

    def listing() -> list[object]:
        return list(list_objects(gcs_client, bucket.name, prefix, timeout=10))

    good = golden("m")
    bucket.blob(golden_object_name("models", "m")).upload_from_string(good.to_json())
    bucket.blob(golden_object_name("models", "bad..name")).upload_from_string("{}")  # not a model name: ignored
    assert set(await mirror.refresh(listing())) == {"m"}  # type: ignore[arg-type]
    assert GoldenSet.read(golden_path(tmp_path, "m")) == good
    reads = mirror.reads
    await mirror.refresh(listing())  # type: ignore[arg-type]
    assert mirror.reads == reads, "an unchanged generation is not read again"

    bucket.blob(golden_object_name("models", "m")).upload_from_string('{"model": "m", "requests": [{"name": "x"}]}')
    assert set(await mirror.refresh(listing())) == {"m"}  # type: ignore[arg-type]
    assert GoldenSet.read(golden_path(tmp_path, "m")) == good
    [alarm] = mirror.alarms()
    assert alarm.kind == "golden-invalid" and alarm.model == "m"

    bucket.blob(golden_object_name("models", "m")).delete()
    assert await mirror.refresh(listing()) == {}  # type: ignore[arg-type]
    assert not golden_path(tmp_path, "m").exists() and mirror.alarms() == []


@pytest.mark.parametrize("prefix", ["", "models"])
def test_object_names(prefix: str) -> None:
    assert golden_object_name(prefix, "m") == (f"{prefix}/" if prefix else "") + "_fleet/golden/m.json"


async def test_the_pass_mirrors_golden_sets_and_writes_generated_warmup_into_new_versions(
    tmp_path: Path, bucket: storage.Bucket, make_worker: Callable[..., SyncWorker]
) -> None:
    from tests.remote_model_puller.conftest import upload_version

    worker = make_worker()
    prefix = worker.settings.prefix.rstrip("/")
    bucket.blob(golden_object_name(prefix, "m")).upload_from_string(golden("m").to_json())
    upload_version(bucket, write_model(tmp_path / "src", 1), "m", "1")
    assert await worker.run_now(), worker.last_error
    local = worker.settings.local_model_directory
    assert GoldenSet.read(golden_path(local, "m")) == golden("m")
    manifest = Manifest.read(manifest_path(local, "m", 1))
    assert manifest.generated == [WARMUP_PATH]
    assert WARMUP_PATH not in {o.name for o in manifest.objects}
    records = list(decode_records((local / "m" / "1" / WARMUP_PATH).read_bytes()))
    assert len(records) == worker.settings.generated_warmup_repeat
