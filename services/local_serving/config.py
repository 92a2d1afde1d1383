"""models.config handling: parse the text format, validate like ServerCore, describe version policies.

The config proto is upstream's ``tensorflow.serving.ModelServerConfig``; validation order and messages
follow tensorflow_serving/model_servers/server_core.cc (see BEHAVIOUR.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from services.common.errors import TFServingError

TENSORFLOW_PLATFORM = "tensorflow"


def rpc_error(code: str, message: str) -> TFServingError:
    """A TF Serving status: ``code`` is a gRPC status name (``NOT_FOUND``...)."""
    return TFServingError(message, code=code)


@dataclass(frozen=True)
class VersionPolicy:
    """``latest`` (num_versions), ``all``, or ``specific`` (versions)."""

    kind: str
    num_versions: int = 1
    versions: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ModelSource:
    """What the filesystem source watches for one model."""

    name: str
    base_path: str
    policy: VersionPolicy


def parse_config_text(text: str) -> Any:
    """Parse a models.config text; raises ``text_format.ParseError`` on a bad file."""
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return config


def read_config_file(path: Path) -> Any:
    """Read and parse the models.config file at ``path``."""
    return parse_config_text(Path(path).read_text(encoding="utf-8"))


def single_model_config(model_name: str, base_path: str) -> Any:
    """Single-model mode: one entry {name, base_path, "tensorflow", latest}, as main.cc builds it."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = model_name
    entry.base_path = base_path
    entry.model_platform = TENSORFLOW_PLATFORM
    return config


def policy_of(model_config: Any) -> VersionPolicy:
    """The version policy of a ModelConfig: no policy = latest(1); num_versions 0 counts as 1."""
    policy = model_config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    num = policy.latest.num_versions if which == "latest" else 1
    return VersionPolicy("latest", num_versions=max(num, 1))


def sources_of(config: Any) -> dict[str, ModelSource]:
    """The models of a ModelServerConfig, by name."""
    return {
        entry.name: ModelSource(entry.name, entry.base_path, policy_of(entry))
        for entry in config.model_config_list.config
    }


def has_model_list(config: Any) -> bool:
    """True when the config holds a model_config_list (possibly empty)."""
    return bool(config.WhichOneof("config") == "model_config_list")


def validate_model_config_list(config: Any) -> None:
    """ValidateModelConfigList: duplicate names and relative base paths are INVALID_ARGUMENT."""
    seen: set[str] = set()
    for entry in config.model_config_list.config:
        if entry.name in seen:
            raise rpc_error("INVALID_ARGUMENT", f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not entry.base_path.startswith("/") and "://" not in entry.base_path:
            raise rpc_error(
                "INVALID_ARGUMENT",
                f"Expected model {entry.name} to have an absolute path or URI; got base_path()={entry.base_path}",
            )


def platform_of(entry: Any) -> str:
    """server_core.cc GetPlatform: model_platform, or the deprecated model_type (TENSORFLOW = "tensorflow")."""
    if entry.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if entry.model_platform:
            raise rpc_error(
                "INVALID_ARGUMENT",
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {entry.name}",
            )
        if entry.model_type != model_server_config_pb2.TENSORFLOW:
            raise rpc_error(
                "INVALID_ARGUMENT", f"ModelServerConfig::model_type choice {entry.model_type} not supported."
            )
        return TENSORFLOW_PLATFORM
    if not entry.model_platform:
        raise rpc_error(
            "INVALID_ARGUMENT",
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {entry.name}",
        )
    return str(entry.model_platform)


def validate_no_platform_changes(old: Any, new: Any) -> None:
    """ValidateNoModelsChangePlatforms: a kept model may not change platform."""
    old_platforms = {entry.name: platform_of(entry) for entry in old.model_config_list.config}
    for entry in new.model_config_list.config:
        before = old_platforms.get(entry.name)
        if before is None:
            continue
        after = platform_of(entry)
        if before != after:
            raise rpc_error(
                "INVALID_ARGUMENT",
                f"Illegal to change a model's platform. For model {entry.name} platform was {before} "
                f"and new platform requested is {after}",
            )


def validate_platforms(config: Any) -> None:
    """CreateStoragePathRoutes: the only platform is "tensorflow"; empty or unknown ones are refused."""
    for entry in config.model_config_list.config:
        platform = platform_of(entry)
        if platform != TENSORFLOW_PLATFORM:
            raise rpc_error("INVALID_ARGUMENT", f"Model {entry.name} requests unsupported platform {platform}")


def labels_of(config: Any) -> dict[str, dict[str, int]]:
    """version_labels of every model: {model: {label: version}}."""
    return {
        entry.name: dict(entry.version_labels.items())
        for entry in config.model_config_list.config
        if entry.version_labels
    }


def check_labels(
    config: Any,
    *,
    current_labels: Mapping[str, Mapping[str, int]],
    is_available: Any,
    allow_unavailable: bool,
) -> dict[str, dict[str, int]]:
    """UpdateModelVersionLabelMap: every label must point at an AVAILABLE version.

    With ``allow_unavailable`` a label may point anywhere unless it already exists with another
    version (moving a label onto an unavailable version still fails). Returns the new label map.
    """
    new_labels = labels_of(config)
    for model, labels in new_labels.items():
        for label, version in labels.items():
            existing = current_labels.get(model, {}).get(label)
            allowed = allow_unavailable and (existing is None or existing == version)
            if not allowed and not is_available(model, version):
                raise rpc_error(
                    "FAILED_PRECONDITION",
                    f"Request to assign label to version {version} of model {model}, which is not "
                    "currently available for inference",
                )
    return new_labels
