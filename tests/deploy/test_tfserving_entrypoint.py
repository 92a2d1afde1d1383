"""The stack's tfserving entrypoint: wait for config_manager's models.config, then exec the server.

The script is taken from the stack exactly as `docker stack config` renders it and run with /bin/sh;
a stand-in `tensorflow_model_server` on PATH records the arguments it was exec'd with.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

FAKE_SERVER = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD"
"""


def launch(tfserving: dict[str, Any], tmp_path: Path, config: Path) -> subprocess.Popen[str]:
    """Start the rendered entrypoint + command, pointed at ``config`` and the stand-in server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    server = bin_dir / "tensorflow_model_server"
    server.write_text(FAKE_SERVER)
    server.chmod(0o755)
    command = [
        f"--model_config_file={config}" if argument.startswith("--model_config_file=") else argument
        for argument in tfserving["command"]
    ]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path / "argv")}
    return subprocess.Popen(
        [*tfserving["entrypoint"], *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def still_waiting(process: subprocess.Popen[str], seconds: float) -> bool:
    """True if ``process`` is still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.1)
    return True


def test_tfserving_waits_for_models_config_then_starts_with_every_flag(
    services: dict[str, Any], tmp_path: Path
) -> None:
    config = tmp_path / "serving_config" / "models.config"
    process = launch(services["tfserving"], tmp_path, config)
    try:
        assert still_waiting(process, 1.5), process.communicate()
        config.parent.mkdir()
        config.write_text("")  # an empty file is not a config TF Serving can start from
        assert still_waiting(process, 1.5)
        assert not (tmp_path / "argv").exists()
        config.with_suffix(".tmp").write_text("model_config_list {}\n")
        config.with_suffix(".tmp").rename(config)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert f"waiting for {config}" in stderr
    expected = [
        f"--model_config_file={config}" if argument.startswith("--model_config_file=") else argument
        for argument in services["tfserving"]["command"]
    ]
    assert (tmp_path / "argv").read_text().splitlines() == expected


def test_tfserving_refuses_to_start_without_a_config_file_flag(services: dict[str, Any], tmp_path: Path) -> None:
    tfserving = {**services["tfserving"]}
    tfserving["command"] = [a for a in tfserving["command"] if not a.startswith("--model_config_file=")]
    process = launch(tfserving, tmp_path, tmp_path / "unused")
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 64
    assert "--model_config_file" in stderr
    assert not (tmp_path / "argv").exists()
