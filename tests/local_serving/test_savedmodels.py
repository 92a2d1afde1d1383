"""The SavedModel factory writes real models whose answer is their version (tests/support/savedmodels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import TFServingError
from services.local_serving.servable import load_servable, read_signature_defs
from tests.support.savedmodels import install_model, write_corrupt_model, write_model


def data_shards(version_dir: Path) -> list[Path]:
    return sorted((version_dir / "variables").glob("variables.data-*"))


def test_model_answers_version_times_x(tmp_path: Path) -> None:
    import tensorflow as tf

    path = write_model(tmp_path / "m", 7)
    assert path == tmp_path / "m" / "7"
    assert (path / "saved_model.pb").is_file() and (path / "variables" / "variables.index").is_file()
    assert [p.name for p in data_shards(path)] == ["variables.data-00000-of-00001"]
    servable = load_servable("m", 7, path)
    outputs = servable.predict("", {"x": tf.make_tensor_proto([[2.0], [3.0]], dtype=tf.float32)}, [])
    assert tf.make_ndarray(outputs["y"]).tolist() == [[14.0], [21.0]]
    # The version lives in the variables: a second, cached write of another version answers differently.
    other = write_model(tmp_path / "m", 8)
    assert load_servable("m", 8, other).predict("", {"x": tf.make_tensor_proto([[1.0]])}, [])["y"].float_val == [8.0]


def test_shards_padding_and_changed_signature(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m", 1, shards=3, padding_bytes=300_000)
    shards = data_shards(path)
    assert [p.name[-14:] for p in shards] == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]
    assert sum(p.stat().st_size for p in shards) >= 300_000
    changed = write_model(tmp_path / "m", 2, changed_signature=True)
    inputs = read_signature_defs(changed)["serving_default"].inputs
    assert list(inputs) == ["features"]
    assert [d.size for d in inputs["features"].tensor_shape.dim] == [-1, 2]
    with pytest.raises(FileExistsError):
        write_model(tmp_path / "m", 1)


@pytest.mark.parametrize(
    ("kind", "code", "text"),
    [
        ("truncated_pb", "DATA_LOSS", "Can't parse"),
        ("garbage", "DATA_LOSS", "Can't parse"),
        ("missing_variables", "NOT_FOUND", "variables"),
    ],
)
def test_corrupt_models_fail_to_load_with_a_clear_error(tmp_path: Path, kind: str, code: str, text: str) -> None:
    path = write_corrupt_model(tmp_path / "m", 3, kind)  # type: ignore[arg-type]
    with pytest.raises(TFServingError) as caught:
        load_servable("m", 3, path)
    assert caught.value.code == code and text in caught.value.detail


def test_install_model_leaves_no_staging_behind(tmp_path: Path) -> None:
    install_model(tmp_path / "m", 4)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["4"]
