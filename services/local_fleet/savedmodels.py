"""Tiny REAL TensorFlow SavedModels whose answer reveals their version.

``write_model(dir, 7)`` writes ``dir/7/`` (saved_model.pb + variables/) whose ``serving_default``
signature takes ``x`` (float32, [None, 1]) and returns ``y = 7 * x``. The version lives in a variable,
so ``variables.index`` and ``variables.data-*`` exist and a wrong restore would be visible in the answer.

TensorFlow is imported inside the functions only: importing this module is free.
Every version directory appears atomically (built in a hidden ``.staging-*`` sibling, then renamed),
so a server polling the base path never sees half a model.

Building a model costs ~0.1-0.3 s once TF is imported; identical requests (same version and options)
are served from a per-process cache of finished models and copied.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

CorruptKind = Literal["truncated_pb", "missing_variables", "garbage"]
#: How ``assets.extra/tf_serving_warmup_requests`` is broken (see write_model).
WarmupFault = Literal["corrupt_crc", "truncated", "unparseable", "unknown_signature", "classify_log"]
WARMUP_FAULTS: tuple[WarmupFault, ...] = (
    "corrupt_crc",
    "truncated",
    "unparseable",
    "unknown_signature",
    "classify_log",
)

#: Signature details, for tests that want to check metadata.
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "x"
OUTPUT_NAME = "y"
CHANGED_INPUT_NAME = "features"  # changed_signature=True: input "features", float32 [None, 2]

_cache_lock = threading.Lock()
_cache_root: Path | None = None


def _cache_dir() -> Path:
    global _cache_root
    if _cache_root is None:
        _cache_root = Path(tempfile.mkdtemp(prefix="savedmodel-cache-"))
        atexit.register(shutil.rmtree, _cache_root, ignore_errors=True)
    return _cache_root


def _make_sharding_callback(shards: int) -> Any:
    """A checkpoint sharding policy that spreads the checkpoint tensors over exactly ``shards`` files."""
    import tensorflow as tf

    class RoundRobinShards(tf.train.experimental.ShardingCallback):  # type: ignore[misc]
        @property
        def description(self) -> str:
            return f"round robin over {shards} shards"

        def __call__(self, shardable_tensors: Any) -> Any:
            buckets: list[dict[str, dict[Any, Any]]] = [{} for _ in range(shards)]
            ordered = sorted(shardable_tensors, key=lambda t: t.checkpoint_key)
            for index, shardable in enumerate(ordered):
                bucket = buckets[index % shards]
                bucket.setdefault(shardable.checkpoint_key, {})[shardable.slice_spec] = shardable.tensor
            return [bucket for bucket in buckets if bucket]

    return RoundRobinShards()


def _write_warmup_requests(target: Path, count: int, fault: WarmupFault | None, *, input_name: str, width: int) -> None:
    """assets.extra/tf_serving_warmup_requests: ``count`` PredictionLogs for serving_default, then the fault."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

    def predict_log(value: float, signature: str = SIGNATURE_KEY) -> bytes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "warmup"
        request.model_spec.signature_name = signature
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto([[value] * width], dtype=tf.float32))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        return bytes(log.SerializeToString())

    records = [predict_log(float(i)) for i in range(count)]
    if fault == "unparseable":
        records.append(b"\xff\xfe this is not a PredictionLog")
    elif fault == "unknown_signature":
        records.append(predict_log(1.0, signature="no_such_signature"))
    elif fault == "classify_log":
        log = prediction_log_pb2.PredictionLog()
        log.classify_log.request.CopyFrom(classification_pb2.ClassificationRequest())
        records.append(bytes(log.SerializeToString()))
    path = target / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    if fault in ("corrupt_crc", "truncated"):
        data = bytearray(path.read_bytes())
        if fault == "corrupt_crc":
            data[-1] ^= 0xFF  # the last record's data checksum
        else:
            del data[-3:]
        path.write_bytes(bytes(data))


def _build(
    target: Path,
    version: int,
    *,
    padding_bytes: int,
    changed_signature: bool,
    shards: int,
    nan_answers: bool = False,
    first_call_layers: int = 0,
    fail_above: float | None = None,
) -> None:
    import tensorflow as tf

    module = tf.Module()
    # float64 keeps every version up to 2**53 exact in the variable; y is float32 like the input.
    module.version = tf.Variable(float(version), dtype=tf.float64, name="version")
    # A model that loads fine and answers NaN (what golden requests must catch): y = NaN * version * x.
    # Normal models carry no such variable (their bytes stay what they always were).
    if nan_answers:
        module.nan = tf.Variable(float("nan"), dtype=tf.float64, name="nan")

    # A first call that costs: ``first_call_layers`` chained 64x64 layers that TensorFlow optimises and
    # allocates on the first call of a loaded version (what warm-up records pay instead); the answer
    # does not change (their output is multiplied by 0).
    module.layers = [
        tf.Variable(tf.random.stateless_normal([64, 64], seed=[i, version], stddev=0.1), name=f"layer{i}")
        for i in range(first_call_layers)
    ]

    def factor() -> Any:
        value = module.version * module.nan if nan_answers else module.version
        return tf.cast(value, tf.float32)

    def costly(x: Any) -> Any:
        if not module.layers:
            return x
        h = tf.tile(x, [1, 64])
        for w in module.layers:
            h = tf.nn.relu(tf.matmul(h, w)) + h * 0.5
        return x + 0.0 * tf.reduce_sum(h, axis=1, keepdims=True)

    # Extra variables: the padding (if any), split so that there are at least `shards` tensors to spread.
    pieces = max(shards - 1, 1 if padding_bytes > 0 else 0)
    padding_elems = max(padding_bytes // 4, pieces)
    module.padding = [
        tf.Variable(tf.zeros([padding_elems // pieces + (1 if i < padding_elems % pieces else 0)]), name=f"pad{i}")
        for i in range(pieces)
    ]
    if changed_signature:

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name=CHANGED_INPUT_NAME)])  # type: ignore[untyped-decorator]
        def serve_changed(features: Any) -> Any:
            return {OUTPUT_NAME: factor() * features}

        signature = serve_changed
    else:

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=INPUT_NAME)])  # type: ignore[untyped-decorator]
        def serve(x: Any) -> Any:
            if fail_above is not None:
                tf.debugging.assert_less_equal(x, tf.constant(fail_above, tf.float32), message="x out of range")
            return {OUTPUT_NAME: factor() * costly(x)}

        signature = serve
    options = tf.saved_model.SaveOptions(
        experimental_sharding_callback=_make_sharding_callback(shards) if shards > 1 else None
    )
    tf.saved_model.save(module, str(target), signatures={SIGNATURE_KEY: signature}, options=options)


def write_model(
    dir: Path,
    version: int,
    *,
    padding_bytes: int = 0,
    changed_signature: bool = False,
    shards: int = 1,
    warmup_requests: int = 0,
    warmup_fault: WarmupFault | None = None,
    nan_answers: bool = False,
    first_call_layers: int = 0,
    fail_above: float | None = None,
) -> Path:
    """Write a real SavedModel to ``dir/<version>/`` and return that path.

    ``serving_default``: input ``x`` float32 [None, 1] -> output ``y`` = version * x.
    ``padding_bytes`` adds zero-filled float32 variables of about that size (big data shards).
    ``changed_signature`` makes the input ``features`` float32 [None, 2] (y = version * features).
    ``shards`` is the exact number of ``variables.data-K-of-N`` files.
    ``nan_answers`` makes a model that loads and answers NaN (a bad retrain golden requests catch).
    ``first_call_layers`` adds that many hidden 64x64 layers: the first call of a loaded version then
    costs TensorFlow's graph optimisation (about 4-5 ms per layer here), as a real model's does.
    ``fail_above`` makes a version that loads and passes checks with x = 1 but fails (INVALID_ARGUMENT)
    every call whose x is above it: a bad retrain that only real traffic shows.
    ``warmup_requests`` writes ``assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
    PredictionLogs, as TF Serving replays before a version becomes AVAILABLE) with that many valid
    PredictRequests for serving_default; ``warmup_fault`` breaks it after those: ``corrupt_crc`` (the last
    record's checksum), ``truncated`` (cut short), ``unparseable`` (a record that is no PredictionLog),
    ``unknown_signature`` (a request for a missing signature), ``classify_log`` (a ClassifyLog record).
    The version directory must not exist yet. It appears atomically (built in a hidden sibling
    directory, then renamed), so a server polling ``dir`` never loads a half-written version.
    """
    return _staged(
        dir,
        version,
        lambda staging: _write_model_in_place(
            staging,
            version,
            padding_bytes=padding_bytes,
            changed_signature=changed_signature,
            shards=shards,
            warmup_requests=warmup_requests,
            warmup_fault=warmup_fault,
            nan_answers=nan_answers,
            first_call_layers=first_call_layers,
            fail_above=fail_above,
        ),
    )


def _staged(dir: Path, version: int, build: Any) -> Path:
    target = Path(dir) / str(version)
    if target.exists():
        raise FileExistsError(target)
    Path(dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dir))
    try:
        built = build(staging)
        os.rename(built, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_model_in_place(
    dir: Path,
    version: int,
    *,
    padding_bytes: int,
    changed_signature: bool,
    shards: int,
    warmup_requests: int = 0,
    warmup_fault: WarmupFault | None = None,
    nan_answers: bool = False,
    first_call_layers: int = 0,
    fail_above: float | None = None,
) -> Path:
    if shards < 1:
        raise ValueError("shards must be >= 1")
    if warmup_requests < 0 or (warmup_fault is not None and warmup_fault not in WARMUP_FAULTS):
        raise ValueError("warmup_requests must be >= 0 and warmup_fault one of WARMUP_FAULTS")
    if version < 0:
        raise ValueError("version must be >= 0")
    target = Path(dir) / str(version)
    if target.exists():
        raise FileExistsError(target)
    key = f"v{version}-p{padding_bytes}-c{int(changed_signature)}-s{shards}-w{warmup_requests}-{warmup_fault}"
    key += ("-nan" if nan_answers else "") + (f"-l{first_call_layers}" if first_call_layers else "")
    key += f"-f{fail_above:g}" if fail_above is not None else ""
    with _cache_lock:
        cached = _cache_dir() / key
        if not cached.exists():
            building = _cache_dir() / f".{key}.building"
            shutil.rmtree(building, ignore_errors=True)
            _build(
                building,
                version,
                padding_bytes=padding_bytes,
                changed_signature=changed_signature,
                shards=shards,
                nan_answers=nan_answers,
                first_call_layers=first_call_layers,
                fail_above=fail_above,
            )
            if warmup_requests or warmup_fault:
                _write_warmup_requests(
                    building,
                    warmup_requests,
                    warmup_fault,
                    input_name=CHANGED_INPUT_NAME if changed_signature else INPUT_NAME,
                    width=2 if changed_signature else 1,
                )
            os.rename(building, cached)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cached, target)
    return target


def write_corrupt_model(dir: Path, version: int, kind: CorruptKind = "truncated_pb") -> Path:
    """Write ``dir/<version>/`` that TensorFlow (and TF Serving) refuses to load; return the path.

    - ``truncated_pb``: a real model whose saved_model.pb is cut in half (parse error, DATA_LOSS).
    - ``missing_variables``: a real model whose variables/ directory is gone (restore fails, NOT_FOUND).
    - ``garbage``: saved_model.pb full of random bytes, no variables (DATA_LOSS).
    Like write_model, the directory appears atomically (never briefly as a good model).
    """
    if kind not in ("truncated_pb", "missing_variables", "garbage"):
        raise ValueError(f"unknown corruption kind {kind!r}")
    return _staged(dir, version, lambda staging: _write_corrupt_in_place(staging, version, kind))


def _write_corrupt_in_place(dir: Path, version: int, kind: CorruptKind) -> Path:
    target = Path(dir) / str(version)
    if kind == "garbage":
        target.mkdir(parents=True)
        (target / "saved_model.pb").write_bytes(b"\xff\xfe not a protobuf \x00" + os.urandom(256))
        return target
    _write_model_in_place(dir, version, padding_bytes=0, changed_signature=False, shards=1)
    if kind == "truncated_pb":
        pb = target / "saved_model.pb"
        data = pb.read_bytes()
        pb.write_bytes(data[: len(data) // 2])
    else:
        shutil.rmtree(target / "variables")
    return target


def install_model(dir: Path, version: int, *, corrupt: CorruptKind | None = None, **options: Any) -> Path:
    """write_model, or write_corrupt_model when ``corrupt`` names a kind (both appear atomically)."""
    if corrupt is None:
        return write_model(dir, version, **options)
    return write_corrupt_model(dir, version, corrupt)
