"""Start-up and shutdown of the real process: ports, exit codes, SIGTERM, single-model mode, file poll."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from services.local_serving.resources import version_bytes
from tests.support.savedmodels import install_model, write_corrupt_model, write_model
from tests.support.serving import (
    ServingStartError,
    UpstreamClient,
    launch_local_serving,
    model_config_text,
    port_open,
    start_local_serving,
    wait_until_serving,
)


def test_port_opens_only_once_every_model_is_loaded_and_sigterm_kills_at_once(
    tmp_path: Path, fast_flags: tuple[str, ...]
) -> None:
    write_model(tmp_path / "ready", 1)
    config = tmp_path / "models.config"
    config.write_text(
        model_config_text(
            [{"name": "ready", "base_path": tmp_path / "ready"}, {"name": "late", "base_path": tmp_path / "late"}]
        )
    )
    serving = launch_local_serving(config, extra_args=fast_flags)
    try:
        deadline = time.monotonic() + 180
        while "Adding/updating models" not in serving.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        # "late" has no base_path yet: the server waits, with its port closed, for as long as it takes.
        assert serving.proc.poll() is None
        assert not port_open(serving.port)
        install_model(tmp_path / "late", 7)
        wait_until_serving(serving, timeout=120)
        client = UpstreamClient(serving.target)
        assert client.predict("late") == (7, 7.0)
        assert client.predict("ready") == (1, 1.0)
        client.close()
        serving.proc.send_signal(signal.SIGTERM)
        assert serving.proc.wait(5) == -signal.SIGTERM  # no handler, no drain: dead within the 5 s wait
    finally:
        serving.stop()


@pytest.mark.slow
def test_model_whose_first_load_fails_makes_start_fail_with_255(tmp_path: Path, fast_flags: tuple[str, ...]) -> None:
    write_corrupt_model(tmp_path / "bad", 1, "missing_variables")
    config = tmp_path / "models.config"
    config.write_text(model_config_text([{"name": "bad", "base_path": tmp_path / "bad"}]))
    with pytest.raises(ServingStartError) as caught:
        start_local_serving(config, extra_args=fast_flags)
    assert caught.value.returncode == 255
    # load_servables_fast.cc says "servable(s)" for the first load (ReloadConfig later says "model(s)").
    expected = "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: bad version: 1"
    assert expected in caught.value.stderr_tail
    assert "{name: bad version: 1} due to error: NOT_FOUND" in caught.value.stderr_tail


@pytest.mark.slow
def test_labels_at_startup_need_the_flag(tmp_path: Path, fast_flags: tuple[str, ...]) -> None:
    write_model(tmp_path / "m", 1)
    config = tmp_path / "models.config"
    config.write_text(model_config_text([{"name": "m", "base_path": tmp_path / "m", "labels": {"stable": 1}}]))
    with pytest.raises(ServingStartError) as caught:
        start_local_serving(config, extra_args=fast_flags)
    assert caught.value.returncode == 255
    assert "FAILED_PRECONDITION: Request to assign label to version 1 of model m" in caught.value.stderr_tail
    with start_local_serving(
        config, extra_args=[*fast_flags, "--allow_version_labels_for_unavailable_models=true"]
    ) as serving:
        client = UpstreamClient(serving.target)
        assert client.predict("m", label="stable") == (1, 1.0)
        client.close()


def test_bad_config_file_exits_255(tmp_path: Path, fast_flags: tuple[str, ...]) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'x' base_path: '/x' }\n")
    with pytest.raises(ServingStartError) as caught:
        start_local_serving(config, extra_args=fast_flags)
    # server.cc BuildAndStart -> proto_util.h ParseProtoTextFile; main.cc prints it and returns -1.
    assert caught.value.returncode == 255
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config}'" in (
        caught.value.stderr_tail
    )
    with pytest.raises(ServingStartError) as missing:
        start_local_serving(tmp_path / "absent.config", extra_args=fast_flags)
    assert missing.value.returncode == 255
    assert "Failed to start server. Error: NOT_FOUND: " in missing.value.stderr_tail


@pytest.mark.slow
def test_single_model_mode_serves_the_latest_version(tmp_path: Path, fast_flags: tuple[str, ...]) -> None:
    write_model(tmp_path / "solo", 1)
    write_model(tmp_path / "solo", 2)
    with start_local_serving(
        None, extra_args=["--model_name", "solo", f"--model_base_path={tmp_path / 'solo'}", *fast_flags]
    ) as serving:
        client = UpstreamClient(serving.target)
        assert client.predict("solo") == (2, 2.0)
        assert [v for v, *_ in client.status("solo")] == [2]
        # Without the health flag, grpc.health.v1 is not served.
        check = client.channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as caught:
            check(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        client.close()


@pytest.mark.slow
def test_config_file_poll_reloads_keeps_old_on_parse_error_and_empty_list_unloads(
    tmp_path: Path, fast_flags: tuple[str, ...]
) -> None:
    write_model(tmp_path / "a", 1)
    write_model(tmp_path / "b", 1)
    config = tmp_path / "models.config"
    config.write_text(model_config_text([{"name": "a", "base_path": tmp_path / "a"}]))
    poll_flags = [*fast_flags, "--model_config_file_poll_wait_seconds=1"]
    with start_local_serving(config, extra_args=poll_flags) as serving:
        client = UpstreamClient(serving.target)
        config.write_text(
            model_config_text([{"name": "a", "base_path": tmp_path / "a"}, {"name": "b", "base_path": tmp_path / "b"}])
        )
        client.wait_for_state("b", 1, "AVAILABLE")
        config.write_text("model_config_list { this is not text format")
        time.sleep(2.5)
        assert "Failed to read ModelServerConfig file" in serving.stderr_text()
        assert client.predict("a") == (1, 1.0) and client.predict("b") == (1, 1.0)
        config.write_text("model_config_list {}\n")
        client.wait_for_state("a", 1, "END")
        client.wait_for_state("b", 1, "END")
        client.close()


@pytest.mark.slow
def test_initial_loads_run_in_parallel(tmp_path: Path, fast_flags: tuple[str, ...]) -> None:
    write_model(tmp_path / "a", 1)
    write_model(tmp_path / "b", 1)
    config = tmp_path / "models.config"
    config.write_text(
        model_config_text([{"name": "a", "base_path": tmp_path / "a"}, {"name": "b", "base_path": tmp_path / "b"}])
    )
    # num_load_threads stays 0 (inline), but the first load uses num_initial_load_threads (4 x cores).
    with start_local_serving(config, extra_args=[*fast_flags, "--local_only_load_delay_seconds=3"]) as serving:
        log = serving.stderr_text()
    started = [log.index(f"Loading servable version {{name: {name} version: 1}}") for name in ("a", "b")]
    finished = [log.index(f"Successfully loaded servable version {{name: {name} version: 1}}") for name in ("a", "b")]
    assert max(started) < min(finished)  # the second load began while the first was still LOADING


@pytest.mark.slow
def test_memory_budget_fails_a_version_that_does_not_fit_and_the_first_keeps_serving(
    tmp_path: Path, fast_flags: tuple[str, ...]
) -> None:
    write_model(tmp_path / "m", 1)
    cost = version_bytes(tmp_path / "m" / "1")
    assert cost > 0
    config = tmp_path / "models.config"
    config.write_text(model_config_text([{"name": "m", "base_path": tmp_path / "m"}]))
    budget = f"--local_only_memory_budget_bytes={cost + cost // 2}"
    with start_local_serving(config, extra_args=[*fast_flags, budget]) as serving:
        client = UpstreamClient(serving.target)
        install_model(tmp_path / "m", 2)  # same size: v1 + v2 do not fit while v1 still serves
        assert version_bytes(tmp_path / "m" / "2") == cost
        *_, code, message = client.wait_for_state("m", 2, "END")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert f"needs {cost} bytes, {cost // 2} of {cost + cost // 2} bytes available" in message
        assert client.predict("m") == (1, 1.0)  # availability preserving: the first version keeps serving
        client.close()
