"""TF Serving wire layer: the project's .proto subset, an async gRPC client and models.config.

Importing this package never imports TensorFlow (the messages are the project's own, in the proto
package ``modelfleet.tfs``, byte-compatible with ``tensorflow-serving-api``); the gRPC method paths
are upstream's exactly (``/tensorflow.serving.ModelService/...``).
"""

from services.common.tfs.client import TFServingClient, translate_rpc_error
from services.common.tfs.config import EMPTY_CONFIG, build_server_config, parse_config, render_config
from services.common.tfs.lint import lint_config, version_dirs
from services.common.tfs.records import (
    ModelEntry,
    PredictInput,
    PredictInputs,
    PredictResult,
    SignatureSpec,
    TensorSpec,
    VersionState,
    VersionStatus,
)

__all__ = [
    "EMPTY_CONFIG",
    "ModelEntry",
    "PredictInput",
    "PredictInputs",
    "PredictResult",
    "SignatureSpec",
    "TFServingClient",
    "TensorSpec",
    "VersionState",
    "VersionStatus",
    "build_server_config",
    "lint_config",
    "parse_config",
    "render_config",
    "translate_rpc_error",
    "version_dirs",
]
