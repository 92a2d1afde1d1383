"""ServerCore: ReloadConfig under one mutex, labels, and the models.config file poller.

Order of checks in :meth:`ServerCore.reload_config` is upstream's (server_core.cc ReloadConfig):
validate, store, labels, platforms, apply, then wait (no timeout) for NEW model names only.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from services.common.errors import TFServingError
from services.common.tfs import VersionState as State
from services.local_serving import config as cfg
from services.local_serving.manager import ModelManager

logger = logging.getLogger(__name__)


class ServerCore:
    """The config side of the server: what is configured, which labels exist."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        allow_version_labels_for_unavailable_models: bool,
        num_load_threads: int = 0,
        num_initial_load_threads: int = 0,
    ) -> None:
        self.manager = manager
        self._num_load_threads = num_load_threads
        self._num_initial_load_threads = num_initial_load_threads
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        # Upstream's config_mu_: every reload (RPC or file poll) queues behind a blocked one.
        self._reload_lock = threading.Lock()
        self._config: Any = model_server_config_pb2.ModelServerConfig()
        self._labels: dict[str, dict[str, int]] = {}
        self._labels_lock = threading.Lock()
        self._source_created = False

    def reload_config(self, new_config: Any) -> None:
        """Apply ``new_config`` like HandleReloadConfigRequest; raise TFServingError on a non-OK status."""
        with self._reload_lock:
            is_first = self._config.WhichOneof("config") is None
            if not is_first and not (cfg.has_model_list(self._config) and cfg.has_model_list(new_config)):
                raise cfg.rpc_error(
                    "FAILED_PRECONDITION",
                    "Cannot transition to requested config. It is only legal to transition from one "
                    "ModelConfigList to another.",
                )
            if new_config.WhichOneof("config") is None:
                logger.info("Taking no action for empty config.")
                return
            if not cfg.has_model_list(new_config):
                raise cfg.rpc_error("INVALID_ARGUMENT", "Invalid ServerModelConfig")
            cfg.validate_model_config_list(new_config)
            if cfg.has_model_list(self._config):
                cfg.validate_no_platform_changes(self._config, new_config)
            self._config = new_config
            self._update_labels(new_config)
            cfg.validate_platforms(new_config)
            sources = cfg.sources_of(new_config)
            logger.info("Adding/updating models.", extra={"models": sorted(sources)})
            if self._source_created:
                new_names = set(sources) - self.manager.model_names()
                seq = self.manager.set_sources(sources)
                if new_names:
                    self._await_models(new_names, seq, noun="model(s)")
            else:
                self._source_created = True
                self._initial_load(sources)
            logger.info("Finished reloading config")

    def _initial_load(self, sources: dict[str, cfg.ModelSource]) -> None:
        """ConnectSourcesWithFastInitialLoad (load_servables_fast.cc): more load threads until every
        model has a version AVAILABLE or END, then back to --num_load_threads."""
        self.manager.set_num_load_threads(self._num_initial_load_threads)
        try:
            seq = self.manager.set_sources(sources)
            self._await_models(set(sources), seq, noun="servable(s)")
        finally:
            self.manager.set_num_load_threads(self._num_load_threads)

    def _update_labels(self, new_config: Any) -> None:
        with self._labels_lock:
            current = {model: dict(labels) for model, labels in self._labels.items()}
        new_labels = cfg.check_labels(
            new_config,
            current_labels=current,
            is_available=self.manager.is_available,
            allow_unavailable=self._allow_unavailable_labels,
        )
        with self._labels_lock:
            self._labels = new_labels

    def _await_models(self, names: set[str], seq: int, *, noun: str) -> None:
        # server_core.cc WaitUntilModelsAvailable says "model(s)"; the first load says "servable(s)".
        reached = self.manager.wait_until_available_or_end(names, seq)
        failed = {name: status for name, status in reached.items() if status.state != State.AVAILABLE}
        if not failed:
            return
        parts = []
        for name in sorted(failed):
            status = failed[name]
            error = f" due to error: {status.error_code}: {status.error_message}" if status.error_code != "OK" else ""
            parts.append(f"{{{{name: {name} version: {status.version}}}{error}}}, ")
        raise cfg.rpc_error("UNKNOWN", f"{len(failed)} {noun} did not become available: {{{''.join(parts)}}}")

    def version_for_label(self, model: str, label: str) -> int:
        """The version a label names; INVALID_ARGUMENT for an unknown label."""
        with self._labels_lock:
            version = self._labels.get(model, {}).get(label)
        if version is None:
            raise cfg.rpc_error("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
        return version


class ConfigFilePoller:
    """--model_config_file_poll_wait_seconds > 0: re-read the file and reload every N seconds."""

    def __init__(self, core: ServerCore, path: Path, interval_seconds: float) -> None:
        self._core = core
        self._path = path
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-file-poller", daemon=True)

    def start(self) -> None:
        """Start polling in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current reload (a blocked reload keeps its thread)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                new_config = cfg.read_config_file(self._path)
            except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
                logger.error("Failed to read ModelServerConfig file: %s", exc, extra={"path": str(self._path)})
                continue
            try:
                self._core.reload_config(new_config)
            except TFServingError as exc:
                logger.error("Polling config file failed: %s: %s", exc.code, exc.detail)
