"""Model warm-up as TF Serving does it: replay ``assets.extra/tf_serving_warmup_requests`` before AVAILABLE.

Follows tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc (RunSavedModelWarmupUntracked,
single-threaded path) and saved_model_warmup.cc (RunWarmupRequest). Without the file nothing at all is run,
so a version's first real requests pay TensorFlow's first-call cost, exactly as upstream.
The records are read with TensorFlow's own C++ RecordReader, so framing errors carry upstream's texts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from services.common.errors import TFServingError
from services.local_serving.config import rpc_error
from services.local_serving.metrics import WARMUP_LATENCY, WARMUP_RECORDS_READ, Metrics

if TYPE_CHECKING:
    from services.local_serving.servable import Servable

logger = logging.getLogger(__name__)

ASSETS_EXTRA_DIRECTORY = "assets.extra"  # tensorflow/cc/saved_model/constants.h kSavedModelAssetsExtraDirectory
REQUESTS_FILE_NAME = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


@dataclass(frozen=True)
class WarmupOptions:
    """``--enable_model_warmup`` (default true) and ``--num_request_iterations_for_warmup`` (used if > 0)."""

    enabled: bool = True
    num_request_iterations: int = 0

    @property
    def iterations(self) -> int:
        """ModelWarmupOptions.num_request_iterations, set by server.cc only when the flag is > 0; default 1."""
        return self.num_request_iterations if self.num_request_iterations > 0 else 1


def _options_text(options: WarmupOptions) -> str:
    # ModelWarmupOptions.DebugString(): the field appears only when server.cc set it.
    if options.num_request_iterations > 0:
        return f"num_request_iterations {{ value: {options.num_request_iterations} }}"
    return ""


def warmup_file(export_dir: Path) -> Path:
    """Where the warm-up records of a version live."""
    return Path(export_dir) / ASSETS_EXTRA_DIRECTORY / REQUESTS_FILE_NAME


def run_warmup_request(servable: Servable, prediction_log: Any) -> None:
    """RunWarmupRequest: run one PredictionLog against the version being loaded (not via model_spec)."""
    kind = prediction_log.WhichOneof("log_type")
    if kind is None:
        return  # an unset log_type is skipped, and still counts as a record
    if kind != "predict_log":
        # Upstream runs classify/regress/multi_inference too; this server has no Classify/Regress, so a
        # record it cannot run fails the load the way an unsupported type (session_run, streamed) does.
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise rpc_error("UNIMPLEMENTED", f"Unsupported log_type for warmup: {number}")
    request = prediction_log.predict_log.request
    servable.predict(
        request.model_spec.signature_name,
        dict(request.inputs.items()),
        list(request.output_filter),
        model_name=request.model_spec.name,
    )


def _status_string(error: TFServingError | None) -> str:
    # absl::Status::ToString(): "OK" or "CODE: message".
    return "OK" if error is None else f"{error.code}: {error.detail}"


def run_saved_model_warmup(
    servable: Servable, export_dir: Path, *, options: WarmupOptions, metrics: Metrics | None
) -> None:
    """Replay the warm-up records; raise TFServingError (with upstream's code and text) to fail the load."""
    import tensorflow as tf
    from tensorflow.python.lib.io import _pywrap_record_io
    from tensorflow_serving.apis import prediction_log_pb2

    from services.local_serving.servable import code_name

    start = time.monotonic()
    path = warmup_file(export_dir)
    if not path.exists():
        logger.info("No warmup data file found at %s", path, extra={"model": servable.name})
        return
    iterations = options.iterations
    logger.info(
        "Starting to read warmup data for model at %s with model-warmup-options %s",
        path,
        _options_text(options),
        extra={"model": servable.name, "version": servable.version},
    )
    num_records = 0
    status: TFServingError | None = None
    try:
        records = _pywrap_record_io.RecordIterator(str(path), "")
        for record in records:
            prediction_log = prediction_log_pb2.PredictionLog()
            try:
                prediction_log.ParseFromString(record)
            except DecodeError as exc:
                text = record.decode("utf-8", errors="replace")
                raise rpc_error("INVALID_ARGUMENT", f"Failed to parse warmup record: {text} from {path}") from exc
            for _ in range(iterations):
                run_warmup_request(servable, prediction_log)
            num_records += 1
            if num_records > MAX_NUM_RECORDS:
                raise rpc_error(
                    "INVALID_ARGUMENT",
                    f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}",
                )
    except tf.errors.OpError as exc:
        # Only reader errors reach the metrics below; parse/request/limit errors return at once upstream.
        status = rpc_error(code_name(exc.error_code), exc.message)
    except OSError as exc:
        status = rpc_error("NOT_FOUND", f"{path}; {exc.strerror or exc}")
    micros = (time.monotonic() - start) * 1e6
    if metrics is not None:
        metrics.observe(WARMUP_LATENCY, str(export_dir), _status_string(status), value=micros)
        metrics.increment(WARMUP_RECORDS_READ, str(export_dir), _status_string(status), by=num_records)
    if status is not None and status.code == "DATA_LOSS":
        raise rpc_error("DATA_LOSS", f"{status.detail}. Please verify your warmup data is in TFRecord format.")
    if status is not None:
        raise status
    logger.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %s. "
        "Elapsed time (microseconds): %s.",
        path,
        num_records,
        int(micros),
        extra={"model": servable.name, "version": servable.version},
    )
