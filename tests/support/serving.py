"""Start ``services.local_serving`` as a real subprocess for tests.

    with start_local_serving(config_file, extra_args=["--file_system_poll_wait_seconds=1"]) as serving:
        channel = grpc.insecure_channel(serving.target)

The helper returns once the gRPC port accepts connections (the server opens it only after every model
has a version AVAILABLE or END). If the process exits first, ``ServingStartError`` carries its stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from services.local_fleet.ports import free_port, port_open
from services.local_fleet.stackflags import production_serving_args

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Flags that keep tests fast: poll the filesystem every second, one load attempt, short retry wait.
FAST_TEST_FLAGS = (
    "--file_system_poll_wait_seconds=1",
    "--max_num_load_retries=0",
    "--load_retry_interval_micros=100000",
)


def production_flags(**overrides: object) -> tuple[str, ...]:
    """The stack's tfserving flags (read from swarm-deploy.yml) minus what start_local_serving sets
    (port, models.config path) and the REST port; ``overrides`` replace or add flags by name."""
    args = production_serving_args(
        port=0, config_file=Path("unused"), overrides={k: str(v) for k, v in overrides.items()}
    )
    return tuple(arg for arg in args if not arg.startswith(("--port=", "--model_config_file=")))


class ServingStartError(RuntimeError):
    """local_serving exited (or never opened its port) while starting."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(f"{message} (exit code {returncode})\n--- stderr tail ---\n{stderr_tail}")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ServingProcess:
    """A running local_serving: ``.port``, ``.target``, ``.rest_port``, ``.proc``, ``.stop()``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, rest_port: int | None, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.rest_port = rest_port
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path

    def stderr_text(self) -> str:
        """Everything the server logged so far (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 10) -> int | None:
        """Send ``sig`` (SIGKILL by default) and wait for the exit; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def __enter__(self) -> ServingProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def launch_local_serving(
    config_file: Path | None,
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
) -> ServingProcess:
    """Start the process and return at once (no wait for the port)."""
    port = port if port is not None else free_port()
    rest_port: int | None = None
    for arg in extra_args:
        if arg.startswith("--rest_api_port="):
            rest_port = int(arg.split("=", 1)[1]) or None
    log_dir = log_dir if log_dir is not None else Path(tempfile.mkdtemp(prefix="local-serving-log-"))
    log_path = log_dir / f"local_serving-{port}.log"
    args = [sys.executable, "-m", "services.local_serving", f"--port={port}"]
    if config_file is not None:
        args.append(f"--model_config_file={config_file}")
    args.extend(extra_args)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    return ServingProcess(proc, port, rest_port, log_path)


def wait_until_serving(serving: ServingProcess, timeout: float = 120) -> None:
    """Wait for the gRPC port; raise ServingStartError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving.proc.poll() is not None:
            raise ServingStartError(
                "local_serving exited while starting",
                returncode=serving.proc.returncode,
                stderr_tail=serving.stderr_text()[-4000:],
            )
        if port_open(serving.port):
            return
        time.sleep(0.1)
    serving.stop()
    raise ServingStartError(
        f"local_serving did not open port {serving.port} within {timeout} s",
        returncode=serving.proc.returncode,
        stderr_tail=serving.stderr_text()[-4000:],
    )


def start_local_serving(
    config_file: Path | None,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    port: int | None = None,
    log_dir: Path | None = None,
) -> ServingProcess:
    """Start local_serving on a free port and wait until its gRPC port accepts connections.

    ``config_file`` None means single-model mode (pass ``--model_base_path=...`` in ``extra_args``).
    The server's output goes to ``log_dir`` (a new temp dir by default; see ``.stderr_text()``).
    Use as a context manager, or call ``.stop()`` (SIGKILL) yourself.
    """
    serving = launch_local_serving(config_file, port=port, extra_args=extra_args, log_dir=log_dir)
    try:
        wait_until_serving(serving, timeout)
    except BaseException:
        serving.stop()
        raise
    return serving


class UpstreamClient:
    """The upstream ``tensorflow-serving-api`` stubs on one channel, with test-sized helpers.

    Imports TensorFlow (for tensor conversion) when first used for Predict.
    """

    def __init__(self, target: str) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target)
        self.model_service = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.prediction_service = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def predict(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        x: float = 1.0,
        input_name: str = "x",
        signature_name: str = "",
        timeout: float = 5,
    ) -> tuple[int, float]:
        """Predict y for [[x]]; returns (version that answered, y[0][0])."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
        response = self.prediction_service.Predict(request, timeout=timeout)
        return int(response.model_spec.version.value), float(tf.make_ndarray(response.outputs["y"])[0][0])

    def status(self, model: str, *, version: int | None = None, timeout: float = 5) -> list[tuple[int, str, int, str]]:
        """GetModelStatus as [(version, state name, error_code, error_message)], highest version first."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self.model_service.GetModelStatus(request, timeout=timeout)
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            (s.version, names(s.state), s.status.error_code, s.status.error_message)
            for s in response.model_version_status
        ]

    def reload(self, config_text: str, *, timeout: float = 30) -> None:
        """HandleReloadConfigRequest with a text-format ModelServerConfig; raises grpc.RpcError."""
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text, request.config)
        self.model_service.HandleReloadConfigRequest(request, timeout=timeout)

    def wait_for_state(self, model: str, version: int, state: str, *, timeout: float = 60) -> tuple[int, str, int, str]:
        """Poll GetModelStatus until ``version`` of ``model`` is in ``state``; returns that entry."""
        import grpc

        deadline = time.monotonic() + timeout
        last: list[tuple[int, str, int, str]] = []
        while time.monotonic() < deadline:
            try:
                last = self.status(model)
            except grpc.RpcError:
                last = []
            for entry in last:
                if entry[0] == version and entry[1] == state:
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"{model} v{version} never reached {state}; last status {last}")


def model_config_text(models: Sequence[dict[str, object]]) -> str:
    """A text-format models.config from dicts: name, base_path, policy ("latest"/"all"/[versions] or
    ("latest", n)), labels {label: version}, platform (default "tensorflow")."""
    entries = []
    for model in models:
        lines = [f'name: "{model["name"]}"', f'base_path: "{model["base_path"]}"']
        lines.append(f'model_platform: "{model.get("platform", "tensorflow")}"')
        policy = model.get("policy")
        if policy == "all":
            lines.append("model_version_policy { all {} }")
        elif isinstance(policy, tuple):
            lines.append(f"model_version_policy {{ latest {{ num_versions: {policy[1]} }} }}")
        elif isinstance(policy, list):
            versions = " ".join(f"versions: {v}" for v in policy)
            lines.append(f"model_version_policy {{ specific {{ {versions} }} }}")
        labels = model.get("labels") or {}
        assert isinstance(labels, dict)
        for label, version in labels.items():
            lines.append(f'version_labels {{ key: "{label}" value: {version} }}')
        entries.append("  config {\n    " + "\n    ".join(lines) + "\n  }")
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"
