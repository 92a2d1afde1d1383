"""The tfserving flags of the production stack, read from ``swarm-deploy.yml`` (never copied).

The local fleet and the test suites start local_serving with exactly the flags production gives
tensorflow_model_server (retries, retry interval, file-system poll, labels, monitoring), so a guarantee
that holds here holds under the stack's settings. Only what names this machine changes: ports, the
models.config path and the monitoring config path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = REPO_ROOT / "swarm-deploy.yml"
#: Where the stack mounts its monitoring config (``configs: tfserving_monitoring``), and the file it holds.
MONITORING_CONFIG = REPO_ROOT / "docker" / "tfserving" / "monitoring.config"


class StackFileError(RuntimeError):
    """swarm-deploy.yml has no tfserving service with a command list of ``--flag=value`` items."""


def stack_tfserving_flags(stack_file: Path = STACK_FILE) -> dict[str, str]:
    """``{flag: value}`` of the tfserving service's ``command`` in ``stack_file``, in file order."""
    try:
        document: Any = yaml.safe_load(stack_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StackFileError(f"cannot read {stack_file}: {exc}") from exc
    try:
        command = document["services"]["tfserving"]["command"]
    except (KeyError, TypeError) as exc:
        raise StackFileError(f"{stack_file}: services.tfserving.command is missing") from exc
    if not isinstance(command, list):
        raise StackFileError(f"{stack_file}: services.tfserving.command is not a list")
    flags: dict[str, str] = {}
    for item in command:
        text = str(item)
        if not text.startswith("--") or "=" not in text:
            raise StackFileError(f"{stack_file}: tfserving flag {text!r} is not --flag=value")
        name, value = text[2:].split("=", 1)
        flags[name] = value
    return flags


def production_serving_args(
    *,
    port: int,
    config_file: Path,
    rest_port: int | None = None,
    overrides: Mapping[str, str] | None = None,
    stack_file: Path = STACK_FILE,
) -> list[str]:
    """local_serving arguments: the stack's tfserving flags with this machine's ports and paths.

    ``overrides`` replaces (or adds) flags by name — for local-only flags such as
    ``local_only_memory_budget_bytes``; a test that overrides a production flag should say why.
    """
    flags = stack_tfserving_flags(stack_file)
    flags["port"] = str(port)
    flags["model_config_file"] = str(config_file)
    if rest_port:
        flags["rest_api_port"] = str(rest_port)
    else:
        flags.pop("rest_api_port", None)
    if "monitoring_config_file" in flags:
        flags["monitoring_config_file"] = str(MONITORING_CONFIG)
    flags.update(overrides or {})
    return [f"--{name}={value}" for name, value in flags.items()]


def flag_values(args: Sequence[str]) -> dict[str, str]:
    """``["--a=1", "--b=x"]`` → ``{"a": "1", "b": "x"}`` (for checks and status pages)."""
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
