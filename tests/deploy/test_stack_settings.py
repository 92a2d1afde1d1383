"""Each service, started with the environment the stack gives it, ends up where the stack expects it.

Swarm replaces ``{{.Node.Hostname}}`` at task creation; here it becomes a concrete node name.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import REQUIRED_VARS

NODE = "gpu-node-7"


def settings_of(name: str, service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``services.<name>.settings.Settings()`` built from the rendered environment only."""
    for key in list(os.environ):
        if key.startswith(("FLEET_", "TENSORFLOW_SERVING_", "GOOGLE_", "STORAGE_EMULATOR")) or key in {
            "HOSTNAME",
            "LOCAL_MODEL_DIRECTORY",
            "REMOTE_MODEL_DIRECTORY",
            "CLOUDSDK_CONFIG",
        }:
            monkeypatch.delenv(key)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value).replace("{{.Node.Hostname}}", NODE))
    return importlib.import_module(f"services.{name}.settings").Settings()


def secret_paths(service: dict[str, Any]) -> set[Path]:
    """Where the service's secrets appear inside its container."""
    targets = [Path(secret["target"]) for secret in service["secrets"]]
    return {target if target.is_absolute() else Path("/run/secrets") / target for target in targets}


def host_port(service: dict[str, Any], target: int) -> int:
    """The published port of ``target``."""
    (port,) = [int(p["published"]) for p in service["ports"] if int(p["target"]) == target]
    return port


@pytest.mark.parametrize("name", ["remote_model_puller", "config_manager"])
def test_master_can_call_each_sidecar_at_the_url_it_registers(
    name: str, services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(name, services[name], monkeypatch)
    port = host_port(services[name], settings.port)
    assert settings.base_url() == f"http://{NODE}:{port}"
    assert settings.master_url == services[name]["environment"]["FLEET_MASTER_URL"]
    assert settings.token_file in secret_paths(services[name])
    assert settings.local_model_directory == Path("/local_saved_models")
    assert settings.log_format == "json"


def test_puller_reads_the_bucket_with_the_mounted_credentials(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of("remote_model_puller", services["remote_model_puller"], monkeypatch)
    bucket, _, prefix = REQUIRED_VARS["REMOTE_MODEL_DIRECTORY"].removeprefix("gs://").partition("/")
    assert (settings.bucket_name, settings.prefix) == (bucket, prefix + "/")
    adc = settings.cloudsdk_config / "application_default_credentials.json"
    assert adc in secret_paths(services["remote_model_puller"])


def test_config_manager_drives_its_own_nodes_tfserving(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of("config_manager", services["config_manager"], monkeypatch)
    assert settings.tensorflow_serving_grpc_target == f"{NODE}:{host_port(services['tfserving'], 8500)}"
    assert str(settings.tensorflow_serving_config_file) in " ".join(services["tfserving"]["command"])


def test_master_listens_where_port_80_is_forwarded(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    master = services["master"]
    settings = settings_of("master", master, monkeypatch)
    assert host_port(master, settings.port) == 80
    assert {v["target"] for v in master["volumes"] if v["type"] == "volume"} == {str(settings.state_dir)}
    assert {settings.token_file, settings.admin_tokens_file} <= secret_paths(master)
    assert settings.cloudsdk_config / "application_default_credentials.json" in secret_paths(master)
