"""Serving signatures read from saved_model.pb without TensorFlow agree with TensorFlow's own parse, pick
the MetaGraphDef TF Serving loads, refuse broken files clearly and never read the graph into memory."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from services.common.tfs.savedmodel import SavedModelUnreadable, read_serving_signatures
from services.common.tfs.tensors import signature_specs
from tests.support.savedmodels import write_corrupt_model, write_model


def tensorflow_view(version_dir: Path) -> dict[str, object]:
    """What TF Serving's loader sees: TensorFlow parses the file, the MetaGraphDef tagged exactly serve."""
    model = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    graph = next(g for g in model.meta_graphs if set(g.meta_info_def.tags) == {"serve"})
    return dict(signature_specs(graph.signature_def))


@pytest.mark.parametrize("changed", [False, True])
def test_real_savedmodels_read_as_tensorflow_reads_them(tmp_path: Path, changed: bool) -> None:
    version_dir = write_model(tmp_path / "m", 3, changed_signature=changed)
    signatures = read_serving_signatures(version_dir)
    assert signatures == tensorflow_view(version_dir)
    inputs = signatures["serving_default"].inputs
    assert list(inputs) == (["features"] if changed else ["x"])


def _signature(input_name: str) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs[input_name].name = f"serving_default_{input_name}:0"
    signature.inputs[input_name].dtype = 1
    signature.inputs[input_name].tensor_shape.dim.add(size=-1)
    return signature


def _write(path: Path, model: saved_model_pb2.SavedModel) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(model.SerializeToString())
    return path


def test_the_meta_graph_tagged_exactly_serve_is_the_one_read(tmp_path: Path) -> None:
    model = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    for tags, name in ((["train"], "for_training"), (["serve", "gpu"], "for_gpu"), (["serve"], "for_serving")):
        graph = model.meta_graphs.add()
        graph.meta_info_def.tags.extend(tags)
        graph.meta_info_def.tensorflow_version = "2.x"
        graph.signature_def["serving_default"].CopyFrom(_signature(name))
    signatures = read_serving_signatures(_write(tmp_path / "1", model))
    assert list(signatures["serving_default"].inputs) == ["for_serving"]
    assert list(read_serving_signatures(tmp_path / "1", {"serve", "gpu"})["serving_default"].inputs) == ["for_gpu"]
    with pytest.raises(SavedModelUnreadable, match="no MetaGraphDef tagged"):
        read_serving_signatures(tmp_path / "1", {"tpu"})


def test_a_huge_graph_is_skipped_not_read(tmp_path: Path) -> None:
    model = saved_model_pb2.SavedModel()
    graph = model.meta_graphs.add()
    graph.meta_info_def.tags.append("serve")
    node = graph.graph_def.node.add(name="weights", op="Const")
    node.attr["value"].tensor.tensor_content = bytes(64 << 20)
    graph.signature_def["serving_default"].CopyFrom(_signature("x"))
    version_dir = _write(tmp_path / "1", model)
    del model, graph, node
    tracemalloc.start()
    try:
        signatures = read_serving_signatures(version_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert list(signatures["serving_default"].inputs) == ["x"]
    assert peak < 4 << 20, f"read {peak} bytes for a 64 MiB graph"


@pytest.mark.parametrize("kind", ["truncated_pb", "garbage"])
def test_broken_files_are_refused_clearly(tmp_path: Path, kind: str) -> None:
    version_dir = write_corrupt_model(tmp_path / "m", 1, kind)  # type: ignore[arg-type]
    with pytest.raises(SavedModelUnreadable):
        read_serving_signatures(version_dir)


def test_missing_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SavedModelUnreadable, match=r"saved_model\.pb"):
        read_serving_signatures(tmp_path)


def test_any_truncation_or_random_bytes_is_a_clear_refusal_or_a_result(tmp_path: Path) -> None:
    good = (write_model(tmp_path / "m", 1) / "saved_model.pb").read_bytes()
    rng = random.Random(5)
    samples = [good[:cut] for cut in range(0, len(good), max(1, len(good) // 300))]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400))) for _ in range(300)]
    samples += [bytearray(good) for _ in range(100)]
    for sample in samples[-100:]:
        assert isinstance(sample, bytearray)
        sample[rng.randrange(len(sample))] ^= 1 << rng.randrange(8)  # one flipped bit
    probe = tmp_path / "probe"
    probe.mkdir()
    for sample in samples:
        (probe / "saved_model.pb").write_bytes(bytes(sample))
        try:
            read_serving_signatures(probe)
        except SavedModelUnreadable:
            pass
