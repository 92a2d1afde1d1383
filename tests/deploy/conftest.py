"""Fixtures for the deployment deliverables: the stack rendered by the real docker CLI, the Dockerfiles."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "swarm-deploy.yml"
DOCKER_DIR = REPO / "docker"
RUNBOOK = REPO / "RUNBOOK.md"

# The variables `docker stack deploy` refuses to run without.
REQUIRED_VARS = {
    "MODELFLEET_REGISTRY": "registry.example.com/ml",
    "MODELFLEET_VERSION": "1.2.3",
    "REMOTE_MODEL_DIRECTORY": "gs://models-bucket/prod/models",
}

# Python services: image Dockerfile, module run by the image, port inside the container.
PY_SERVICES = {
    "remote_model_puller": {"dockerfile": "remote_model_puller.Dockerfile", "port": 8001},
    "config_manager": {"dockerfile": "config_manager.Dockerfile", "port": 8002},
    "master": {"dockerfile": "master.Dockerfile", "port": 8080},
}


def docker_cli() -> str:
    """The docker CLI; its absence is a failure (the stack check must really run)."""
    found = shutil.which("docker")
    if found is None:
        pytest.fail("the docker CLI is not on PATH: `docker stack config` cannot validate swarm-deploy.yml")
    return found


def clean_env(home: Path, **variables: str) -> dict[str, str]:
    """An environment without any stack variable of the caller's shell, plus ``variables``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODELFLEET_", "DOCKER_", "TFSERVING_")) and key != "REMOTE_MODEL_DIRECTORY"
    }
    env["HOME"] = str(home)  # no ~/.docker/config.json of whoever runs the tests
    env.update(variables)
    return env


def stack_config(home: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run `docker stack config -c swarm-deploy.yml` (offline: no engine needed)."""
    return subprocess.run(
        [docker_cli(), "stack", "config", "-c", str(STACK_FILE)],
        cwd=REPO,
        env=clean_env(home, **variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def rendered_stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack as Swarm would receive it, with only the required variables set."""
    result = stack_config(tmp_path_factory.mktemp("dockerhome"), **REQUIRED_VARS)
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def services(rendered_stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rendered services, by name."""
    found = rendered_stack["services"]
    assert isinstance(found, dict)
    return found
