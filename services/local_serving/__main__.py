"""``python -m services.local_serving``: a TF-Serving-compatible model server (flags as upstream's).

No SIGTERM handler on purpose: like tensorflow_model_server, the process dies at once, without drain.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

logger = logging.getLogger("services.local_serving")

EXIT_START_FAILED = 255  # tensorflow_model_server's main() returns -1 for every start-up failure
EXIT_BAD_FLAGS = EXIT_START_FAILED  # a flag value that does not parse: usage, then -1 (main.cc)
LOCAL_ONLY = "LOCAL ONLY (not a tensorflow_model_server flag): "


def parse_bool(value: str) -> bool:
    """gflags-style booleans: true/false, 1/0, yes/no."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


class _FlagParser(argparse.ArgumentParser):
    """A flag value that does not parse prints the usage and exits -1 (255), like main.cc."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stdout)
        self.exit(EXIT_BAD_FLAGS, f"{self.prog}: error: {message}\n")


def initial_load_threads() -> int:
    """server_core.h num_initial_load_threads: 4 x schedulable CPUs (no flag sets it upstream)."""
    return 4 * len(os.sched_getaffinity(0))


def build_parser() -> argparse.ArgumentParser:
    """The flags, named like tensorflow_model_server's (``--flag=value`` and ``--flag value``)."""
    parser = _FlagParser(prog="local_serving", description=__doc__, allow_abbrev=False)

    def flag(name: str, kind: Any, default: Any, help_text: str) -> None:
        if kind is bool:
            parser.add_argument(f"--{name}", type=parse_bool, nargs="?", const=True, default=default, help=help_text)
        else:
            parser.add_argument(f"--{name}", type=kind, default=default, help=help_text)

    flag("port", int, 8500, "gRPC port")
    flag("rest_api_port", int, 0, "REST port (0 = no REST server)")
    flag("model_config_file", str, "", "models.config (text-format ModelServerConfig)")
    flag("model_config_file_poll_wait_seconds", int, 0, "re-read the config file every N s (<=0: once)")
    flag("file_system_poll_wait_seconds", int, 1, "version discovery interval (0: once, <0: never)")
    flag("model_name", str, "default", "single-model mode: the model name")
    flag("model_base_path", str, "", "single-model mode: the base path")
    flag("max_num_load_retries", int, 5, "retries of a failed load")
    flag("load_retry_interval_micros", int, 60_000_000, "wait between load retries")
    flag("allow_version_labels_for_unavailable_models", bool, False, "new labels may name unavailable versions")
    flag("enable_grpc_healthcheck_service", bool, False, "serve grpc.health.v1")
    flag("monitoring_config_file", str, "", "MonitoringConfig text file (prometheus_config)")
    flag("tensorflow_intra_op_parallelism", int, 2, "TF intra-op threads")
    flag("tensorflow_inter_op_parallelism", int, 1, "TF inter-op threads")
    flag("grpc_max_threads", int, 64, "gRPC worker threads")
    flag("num_load_threads", int, 0, "load thread pool size (0: loads run inline on the manager thread)")
    flag(
        "local_only_memory_budget_bytes",
        int,
        0,
        LOCAL_ONLY + "memory budget for loaded and loading versions; a version costs the bytes of its "
        "variables/variables.data-* files; a load that does not fit fails RESOURCE_EXHAUSTED like a GPU OOM "
        "(0: unlimited)",
    )
    flag(
        "local_only_load_delay_seconds",
        float,
        0.0,
        LOCAL_ONLY + "every load attempt takes N extra seconds while the version is LOADING (default 0)",
    )
    # Accepted for command-line compatibility with production flags; they change nothing here.
    for ignored in ("num_unload_threads", "rest_api_timeout_in_ms", "rest_api_num_threads"):
        flag(ignored, int, 0, "accepted and ignored")
    for ignored_bool in ("enable_batching", "flush_filesystem_caches", "enable_model_warmup"):
        flag(ignored_bool, bool, False, "accepted and ignored")
    return parser


def _fail(message: str, code: int) -> NoReturn:
    logger.error("%s", message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


def _metrics_path(monitoring_config_file: str) -> str | None:
    if not monitoring_config_file:
        return None
    from google.protobuf import text_format

    from services.local_serving._protos import MonitoringConfig

    config = MonitoringConfig()
    text_format.Parse(Path(monitoring_config_file).read_text(encoding="utf-8"), config)
    if not config.prometheus_config.enable:
        return None
    return str(config.prometheus_config.path or "/monitoring/prometheus/metrics")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, load the initial config, then open the ports; never returns normally."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # tensorflow::Flags::Parse passes unknown arguments through; main.cc prints them and goes on.
        print(f"unknown argument: {unknown[0]}\n{parser.format_usage()}", flush=True)  # noqa: T201 - CLI
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from services.common.logging import configure_logging

    configure_logging(os.environ.get("FLEET_LOG_FORMAT", "text"), service="local_serving")

    from google.protobuf import text_format

    from services.local_serving import config as cfg

    # Server::BuildAndStart (server.cc): each failure returns a status that main.cc prints as
    # "Failed to start server. Error: <status>" before returning -1.
    if not args.model_base_path and not args.model_config_file:
        _fail(
            "Failed to start server. Error: INVALID_ARGUMENT: Both server_options.model_base_path and "
            "server_options.model_config_file are empty!",
            EXIT_START_FAILED,
        )
    if args.model_config_file:
        try:
            config = cfg.read_config_file(Path(args.model_config_file))
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            logger.error("Error parsing text-format tensorflow.serving.ModelServerConfig: %s", exc)
            # util/proto_util.h ParseProtoTextFile
            _fail(
                f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{args.model_config_file}'",
                EXIT_START_FAILED,
            )
        except OSError as exc:
            _fail(
                f"Failed to start server. Error: NOT_FOUND: {args.model_config_file}; {exc.strerror}",
                EXIT_START_FAILED,
            )
    else:
        config = cfg.single_model_config(args.model_name, args.model_base_path)
    _serve(args, config)


def _serve(args: argparse.Namespace, config: Any) -> None:
    import tensorflow as tf
    from google.protobuf import text_format

    from services.common.errors import TFServingError
    from services.local_serving.core import ConfigFilePoller, ServerCore
    from services.local_serving.manager import ModelManager
    from services.local_serving.metrics import Metrics
    from services.local_serving.rest import RestServer
    from services.local_serving.servable import load_servable
    from services.local_serving.server import build_grpc_server

    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    metrics = Metrics()
    manager = ModelManager(
        load=load_servable,
        poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
        on_load_attempt=metrics.count_load_attempt,
        num_load_threads=args.num_load_threads,
        memory_budget_bytes=args.local_only_memory_budget_bytes,
        load_delay_seconds=args.local_only_load_delay_seconds,
    )
    manager.start()
    core = ServerCore(
        manager,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        num_load_threads=args.num_load_threads,
        num_initial_load_threads=initial_load_threads(),
    )
    try:
        # Blocks until every model has a version AVAILABLE or END: ports stay closed until then.
        core.reload_config(config)
    except TFServingError as exc:
        _fail(f"Failed to start server. Error: {exc.code}: {exc.detail}", EXIT_START_FAILED)
    try:
        # server.cc reads the monitoring config only after ServerCore::Create (the models are loaded).
        metrics_path = _metrics_path(args.monitoring_config_file)
    except text_format.ParseError:
        _fail(
            f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{args.monitoring_config_file}'",
            EXIT_START_FAILED,
        )
    except OSError as exc:
        _fail(
            f"Failed to start server. Error: NOT_FOUND: {args.monitoring_config_file}; {exc.strerror}",
            EXIT_START_FAILED,
        )
    try:
        # Keep the reference: a grpc.Server that is garbage collected stops listening.
        grpc_server = build_grpc_server(
            core,
            metrics,
            port=args.port,
            enable_health=args.enable_grpc_healthcheck_service,
            max_workers=args.grpc_max_threads,
        )
        logger.info("Running gRPC ModelServer at 0.0.0.0:%s ...", args.port, extra={"port": args.port})
        if args.rest_api_port:
            RestServer(core, metrics, port=args.rest_api_port, metrics_path=metrics_path).start()
            logger.info("Exporting HTTP/REST API at:localhost:%s ...", args.rest_api_port)
    except (RuntimeError, OSError) as exc:
        _fail(f"Failed to start server. Error: {exc}", EXIT_START_FAILED)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        ConfigFilePoller(core, Path(args.model_config_file), args.model_config_file_poll_wait_seconds).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    del grpc_server
    os._exit(0)


if __name__ == "__main__":
    main()
