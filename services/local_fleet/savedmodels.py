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


def _build(target: Path, version: int, *, padding_bytes: int, changed_signature: bool, shards: int) -> None:
    import tensorflow as tf

    module = tf.Module()
    # float64 keeps every version up to 2**53 exact in the variable; y is float32 like the input.
    module.version = tf.Variable(float(version), dtype=tf.float64, name="version")
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
            return {OUTPUT_NAME: tf.cast(module.version, tf.float32) * features}

        signature = serve_changed
    else:

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=INPUT_NAME)])  # type: ignore[untyped-decorator]
        def serve(x: Any) -> Any:
            return {OUTPUT_NAME: tf.cast(module.version, tf.float32) * x}

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
) -> Path:
    """Write a real SavedModel to ``dir/<version>/`` and return that path.

    ``serving_default``: input ``x`` float32 [None, 1] -> output ``y`` = version * x.
    ``padding_bytes`` adds zero-filled float32 variables of about that size (big data shards).
    ``changed_signature`` makes the input ``features`` float32 [None, 2] (y = version * features).
    ``shards`` is the exact number of ``variables.data-K-of-N`` files.
    The version directory must not exist yet. It appears atomically (built in a hidden sibling
    directory, then renamed), so a server polling ``dir`` never loads a half-written version.
    """
    return _staged(
        dir,
        version,
        lambda staging: _write_model_in_place(
            staging, version, padding_bytes=padding_bytes, changed_signature=changed_signature, shards=shards
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


def _write_model_in_place(dir: Path, version: int, *, padding_bytes: int, changed_signature: bool, shards: int) -> Path:
    if shards < 1:
        raise ValueError("shards must be >= 1")
    if version < 0:
        raise ValueError("version must be >= 0")
    target = Path(dir) / str(version)
    if target.exists():
        raise FileExistsError(target)
    key = f"v{version}-p{padding_bytes}-c{int(changed_signature)}-s{shards}"
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
