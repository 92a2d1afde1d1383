"""models.config validation and the command line, without starting a server."""

from __future__ import annotations

import pytest

from services.common.errors import TFServingError
from services.local_serving import config as cfg
from services.local_serving.__main__ import build_parser
from tests.support.serving import model_config_text


def parse(models: list[dict[str, object]]) -> object:
    return cfg.parse_config_text(model_config_text(models))


def test_flags_take_both_forms_and_gflags_booleans() -> None:
    args = build_parser().parse_args(
        [
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--model_config_file=/c",
            "--allow_version_labels_for_unavailable_models=true",
            "--enable_grpc_healthcheck_service",
            "--max_num_load_retries=0",
            "--load_retry_interval_micros=100000",
            "--file_system_poll_wait_seconds=1",
            "--model_config_file_poll_wait_seconds=0",
        ]
    )
    assert (args.port, args.rest_api_port, args.model_config_file) == (9000, 9001, "/c")
    assert args.allow_version_labels_for_unavailable_models is True
    assert args.enable_grpc_healthcheck_service is True
    assert (args.max_num_load_retries, args.load_retry_interval_micros) == (0, 100000)
    defaults = build_parser().parse_args([])
    assert (defaults.port, defaults.model_name, defaults.file_system_poll_wait_seconds) == (8500, "default", 1)
    assert (defaults.max_num_load_retries, defaults.load_retry_interval_micros) == (5, 60_000_000)
    off = build_parser().parse_args(["--enable_grpc_healthcheck_service=false"])
    assert off.enable_grpc_healthcheck_service is False
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--enable_grpc_healthcheck_service=maybe"])
    assert caught.value.code == 255  # main.cc: a flag that does not parse prints the usage, returns -1


def test_num_load_threads_and_the_local_only_flags(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = build_parser().parse_args([])
    assert defaults.num_load_threads == 0  # loads inline on the manager thread, like upstream
    assert (defaults.local_only_memory_budget_bytes, defaults.local_only_load_delay_seconds) == (0, 0.0)
    args = build_parser().parse_args(
        ["--num_load_threads=2", "--local_only_memory_budget_bytes=1000", "--local_only_load_delay_seconds=2.5"]
    )
    assert (args.num_load_threads, args.local_only_memory_budget_bytes, args.local_only_load_delay_seconds) == (
        2,
        1000,
        2.5,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("--local_only_memory_budget_bytes", "--local_only_load_delay_seconds"):
        assert f"{name} {name.upper().lstrip('-')} LOCAL ONLY (not a tensorflow_model_server flag)" in help_text


def test_default_policy_is_latest_one_and_zero_counts_as_one() -> None:
    config = parse([{"name": "a", "base_path": "/a"}, {"name": "b", "base_path": "/b", "policy": ("latest", 0)}])
    sources = cfg.sources_of(config)
    assert sources["a"].policy == cfg.VersionPolicy("latest", num_versions=1)
    assert sources["b"].policy == cfg.VersionPolicy("latest", num_versions=1)
    specific = cfg.sources_of(parse([{"name": "s", "base_path": "/s", "policy": [3, 1]}]))["s"].policy
    assert specific == cfg.VersionPolicy("specific", versions=frozenset({1, 3}))


def test_validation_refuses_duplicates_relative_paths_and_unknown_platforms() -> None:
    with pytest.raises(TFServingError, match="multiple times") as caught:
        cfg.validate_model_config_list(parse([{"name": "a", "base_path": "/a"}, {"name": "a", "base_path": "/b"}]))
    assert caught.value.code == "INVALID_ARGUMENT"
    with pytest.raises(TFServingError, match="absolute path"):
        cfg.validate_model_config_list(parse([{"name": "a", "base_path": "models/a"}]))
    cfg.validate_model_config_list(parse([{"name": "a", "base_path": "gs://bucket/a"}]))
    with pytest.raises(TFServingError, match="unsupported platform pytorch"):
        cfg.validate_platforms(parse([{"name": "a", "base_path": "/a", "platform": "pytorch"}]))
    with pytest.raises(TFServingError, match="model_platform"):
        cfg.validate_platforms(parse([{"name": "a", "base_path": "/a", "platform": ""}]))
    with pytest.raises(TFServingError, match="change a model's platform"):
        cfg.validate_no_platform_changes(
            parse([{"name": "a", "base_path": "/a"}]),
            parse([{"name": "a", "base_path": "/a", "platform": "other"}]),
        )


def test_labels_need_available_versions_unless_new_and_allowed() -> None:
    config = parse([{"name": "m", "base_path": "/m", "labels": {"stable": 1, "canary": 2}}])

    def only_v1(model: str, version: int) -> bool:
        return version == 1

    with pytest.raises(TFServingError, match="version 2 of model m, which is not currently available") as caught:
        cfg.check_labels(config, current_labels={}, is_available=only_v1, allow_unavailable=False)
    assert caught.value.code == "FAILED_PRECONDITION"
    labels = cfg.check_labels(config, current_labels={}, is_available=only_v1, allow_unavailable=True)
    assert labels == {"m": {"stable": 1, "canary": 2}}
    # Same label, same version: still fine. Moving an existing label onto an unavailable version: refused.
    cfg.check_labels(config, current_labels=labels, is_available=only_v1, allow_unavailable=True)
    with pytest.raises(TFServingError):
        cfg.check_labels(config, current_labels={"m": {"canary": 1}}, is_available=only_v1, allow_unavailable=True)
