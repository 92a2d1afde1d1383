"""swarm-deploy.yml, as the real `docker stack config` renders it: what an operator deploying it relies on."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import PY_SERVICES, REPO, REQUIRED_VARS, stack_config

NODE_SERVICES = ("tfserving", "remote_model_puller", "config_manager")
MIB = 1024 * 1024

# DESIGN.md "tfserving flags" (plus the ports and config file the sidecars rely on).
TFSERVING_FLAGS = {
    "--port": "8500",
    "--rest_api_port": "8501",
    "--model_config_file": "/serving_config/models.config",
    "--model_config_file_poll_wait_seconds": "0",
    "--allow_version_labels_for_unavailable_models": "true",
    "--max_num_load_retries": "2",
    "--load_retry_interval_micros": "5000000",
    "--file_system_poll_wait_seconds": "1",
}


def flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` arguments as a dict."""
    return dict(argument.split("=", 1) for argument in command if argument.startswith("--") and "=" in argument)


def published(service: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Published ports of a service by published port number."""
    return {int(port["published"]): port for port in service.get("ports", [])}


def duration_seconds(text: str) -> float:
    """Go duration as printed by the docker CLI (``15m0s``, ``1m30s``, ``10s``) in seconds."""
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
            continue
        total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
        number = ""
    return total


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Volume mounts of a service by container path."""
    return {volume["target"]: volume for volume in service.get("volumes", [])}


def test_the_stack_validates_with_the_required_variables(services: dict[str, Any]) -> None:
    assert set(services) == {"tfserving", "remote_model_puller", "config_manager", "master"}


@pytest.mark.parametrize("missing", sorted(REQUIRED_VARS))
def test_a_missing_required_variable_is_named_in_the_error(missing: str, tmp_path: Path) -> None:
    variables = {name: value for name, value in REQUIRED_VARS.items() if name != missing}
    result = stack_config(tmp_path, **variables)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing} to" in result.stderr


def test_python_services_run_the_built_images_at_the_requested_tag(services: dict[str, Any]) -> None:
    registry, version = REQUIRED_VARS["MODELFLEET_REGISTRY"], REQUIRED_VARS["MODELFLEET_VERSION"]
    for name in PY_SERVICES:
        image_name = "modelfleet-" + name.replace("_", "-")
        assert services[name]["image"] == f"{registry}/{image_name}:{version}"
        # The Dockerfile's build instructions tag the same image name.
        assert image_name in (REPO / "docker" / PY_SERVICES[name]["dockerfile"]).read_text()


def test_tfserving_is_the_stock_gpu_image_on_every_gpu_node(services: dict[str, Any]) -> None:
    tfserving = services["tfserving"]
    assert tfserving["image"].startswith("tensorflow/serving:")
    assert tfserving["image"].endswith("-gpu")
    assert tfserving["deploy"]["mode"] == "global"
    assert "node.labels.modelfleet.serving == true" in tfserving["deploy"]["placement"]["constraints"]
    gpu = tfserving["deploy"]["resources"]["reservations"]["generic_resources"]
    assert gpu == [{"discrete_resource_spec": {"kind": "gpu", "value": 1}}]


def test_sidecars_run_on_exactly_the_nodes_that_run_tfserving(services: dict[str, Any]) -> None:
    placement = services["tfserving"]["deploy"]["placement"]
    for name in ("remote_model_puller", "config_manager"):
        assert services[name]["deploy"]["mode"] == "global"
        assert services[name]["deploy"]["placement"] == placement


def test_tfserving_runs_with_the_design_flags(services: dict[str, Any]) -> None:
    given = flags(services["tfserving"]["command"])
    for flag, value in TFSERVING_FLAGS.items():
        assert given.get(flag) == value, flag
    monitoring = given["--monitoring_config_file"]
    mounted = {config["target"]: config for config in services["tfserving"]["configs"]}
    assert monitoring in mounted


def test_tfserving_monitoring_config_enables_prometheus(rendered_stack: dict[str, Any]) -> None:
    (config,) = rendered_stack["configs"].values()
    text = Path(config["file"]).read_text()
    assert "prometheus_config" in text
    assert "enable: true" in text


def test_port_8500_is_published_on_each_node_itself(services: dict[str, Any]) -> None:
    port = published(services["tfserving"])[8500]
    assert port["target"] == 8500
    assert port["mode"] == "host"  # no routing-mesh hop between Elasticsearch and the node


def test_tfserving_reserves_memory_and_has_no_hard_limit(services: dict[str, Any]) -> None:
    resources = services["tfserving"]["deploy"]["resources"]
    assert int(resources["reservations"]["memory"]) >= 12 * 1024 * MIB
    assert "limits" not in resources


def test_tfserving_healthcheck_allows_the_slowest_model_load(services: dict[str, Any]) -> None:
    check = services["tfserving"]["healthcheck"]
    assert duration_seconds(check["start_period"]) >= 10 * 60


class _AnyStatus(http.server.BaseHTTPRequestHandler):
    status = 404

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _tcp_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _NotHttp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"\x00\x00\x00\x04garbage\n")  # e.g. an HTTP/2-only or gRPC listener


def _run_tfserving_check(services: dict[str, Any], port: int) -> int:
    """Run the rendered tfserving healthcheck, aimed at ``port`` instead of 8501."""
    test = services["tfserving"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    command = test[3].replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{port}")
    return subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, check=False).returncode


def test_tfserving_healthcheck_is_http_liveness_on_the_rest_port_accepting_any_status(
    services: dict[str, Any],
) -> None:
    test = services["tfserving"]["healthcheck"]["test"]
    assert "/dev/tcp/127.0.0.1/8501" in test[3] and "GET / HTTP/1.0" in test[3]
    assert "8500" not in test[3]
    # Any HTTP status counts (a 404 for "/" is what TF Serving answers; a 500 still proves it alive).
    for status in (200, 404, 500, 503):
        handler = type("Handler", (_AnyStatus,), {"status": status})
        with _tcp_server(handler) as port:
            assert _run_tfserving_check(services, port) == 0, status
    # No HTTP answer is a failure: nothing listening, or a listener that does not speak HTTP.
    with _tcp_server(_NotHttp) as port:
        assert _run_tfserving_check(services, port) != 0
    with _tcp_server(_NotHttp) as port:
        pass
    assert _run_tfserving_check(services, port) != 0


def test_python_services_keep_their_images_health_endpoint_check(services: dict[str, Any]) -> None:
    # The images' HEALTHCHECK probes /healthz (tests/deploy/test_dockerfiles.py); the stack must not
    # replace or disable it.
    for name in PY_SERVICES:
        assert "healthcheck" not in services[name], name


def test_sidecars_and_master_are_limited_to_the_runbook_budget(services: dict[str, Any]) -> None:
    for name in PY_SERVICES:
        assert int(services[name]["deploy"]["resources"]["limits"]["memory"]) == 500 * MIB, name


@pytest.mark.parametrize(("name", "port"), [("remote_model_puller", 8001), ("config_manager", 8002)])
def test_sidecars_are_reachable_per_node_by_hostname(name: str, port: int, services: dict[str, Any]) -> None:
    sidecar = services[name]
    mapping = published(sidecar)[port]
    assert (mapping["target"], mapping["mode"]) == (port, "host")
    environment = sidecar["environment"]
    assert environment["FLEET_PORT"] == str(port)
    assert environment["HOSTNAME"] == "{{.Node.Hostname}}"  # master calls http://<node>:<port>


def test_every_container_on_a_node_shares_one_model_volume(services: dict[str, Any]) -> None:
    sources = {mounts(services[name])["/local_saved_models"]["source"] for name in NODE_SERVICES}
    assert len(sources) == 1
    assert mounts(services["tfserving"])["/local_saved_models"].get("read_only") is True
    assert not mounts(services["remote_model_puller"])["/local_saved_models"].get("read_only")


def test_the_serving_config_directory_is_shared_not_the_file(services: dict[str, Any]) -> None:
    config_file = services["config_manager"]["environment"]["TENSORFLOW_SERVING_CONFIG_FILE"]
    assert config_file == flags(services["tfserving"]["command"])["--model_config_file"]
    directory = str(Path(config_file).parent)
    tfserving, config_manager = mounts(services["tfserving"]), mounts(services["config_manager"])
    assert tfserving[directory]["source"] == config_manager[directory]["source"]
    assert not config_manager[directory].get("read_only")


def test_config_manager_talks_to_its_own_nodes_tfserving(services: dict[str, Any]) -> None:
    target = services["config_manager"]["environment"]["TENSORFLOW_SERVING_GRPC_TARGET"]
    assert target == "{{.Node.Hostname}}:8500"


def test_master_is_one_pinned_replica_on_port_80(services: dict[str, Any]) -> None:
    master = services["master"]
    assert master["deploy"]["mode"] == "replicated"
    assert master["deploy"]["replicas"] == 1
    assert "node.labels.modelfleet.master == true" in master["deploy"]["placement"]["constraints"]
    port = published(master)[80]
    assert str(port["target"]) == master["environment"]["FLEET_PORT"]
    state = mounts(master)[master["environment"]["FLEET_STATE_DIR"]]
    assert state["type"] == "volume"


def test_sidecars_find_master_through_its_network_alias(services: dict[str, Any]) -> None:
    master = services["master"]
    aliases = master["networks"]["fleet"]["aliases"]
    for name in ("remote_model_puller", "config_manager"):
        url = urlsplit(services[name]["environment"]["FLEET_MASTER_URL"])
        assert url.hostname in aliases
        assert str(url.port) == master["environment"]["FLEET_PORT"]
        assert "fleet" in services[name]["networks"]


def test_credentials_and_tokens_are_docker_secrets(rendered_stack: dict[str, Any]) -> None:
    services, secrets = rendered_stack["services"], rendered_stack["secrets"]
    assert all(secret.get("external") for secret in secrets.values())
    for name in PY_SERVICES:
        environment = services[name]["environment"]
        targets = {secret["target"]: secret for secret in services[name]["secrets"]}
        token_file = environment["FLEET_TOKEN_FILE"]
        assert Path(token_file).name in targets or token_file in targets
        for secret in targets.values():
            assert (secret["uid"], secret["gid"], secret["mode"]) == ("10001", "10001", 0o400)
        if "CLOUDSDK_CONFIG" in environment:
            assert f"{environment['CLOUDSDK_CONFIG']}/application_default_credentials.json" in targets
    master_targets = {secret["target"] for secret in services["master"]["secrets"]}
    assert Path(services["master"]["environment"]["FLEET_ADMIN_TOKENS_FILE"]).name in master_targets
    sidecar_sources = {s["source"] for name in NODE_SERVICES[1:] for s in services[name]["secrets"]}
    assert "admin_tokens" not in sidecar_sources


def test_bucket_credentials_go_only_where_the_bucket_is_used(services: dict[str, Any]) -> None:
    for name in ("remote_model_puller", "master"):
        assert services[name]["environment"]["REMOTE_MODEL_DIRECTORY"] == REQUIRED_VARS["REMOTE_MODEL_DIRECTORY"]
    assert not {"gcp_reader", "gcp_writer"} & {s["source"] for s in services["config_manager"]["secrets"]}
    assert "secrets" not in services["tfserving"]


def test_least_privilege_the_puller_reads_with_its_own_key_only_master_writes(rendered_stack: dict[str, Any]) -> None:
    services, secrets = rendered_stack["services"], rendered_stack["secrets"]
    sources = {name: {s["source"] for s in services[name]["secrets"]} for name in PY_SERVICES}
    assert "gcp_reader" in sources["remote_model_puller"] and "gcp_writer" not in sources["remote_model_puller"]
    assert "gcp_writer" in sources["master"] and "gcp_reader" not in sources["master"]
    assert secrets["gcp_reader"]["name"] != secrets["gcp_writer"]["name"]
    master = services["master"]["environment"]
    assert master["FLEET_SIDECAR_ADDRESSES"] == "{hostname}:8001,{hostname}:8002"
    for name in PY_SERVICES:  # auth stays on: every Python service has its token files, none disables it
        assert "FLEET_AUTH" not in services[name]["environment"] and services[name]["environment"]["FLEET_TOKEN_FILE"]


@pytest.mark.parametrize("name", NODE_SERVICES)
def test_node_services_update_one_node_at_a_time_and_roll_back(name: str, services: dict[str, Any]) -> None:
    deploy = services[name]["deploy"]
    update = deploy["update_config"]
    # Host-mode ports: a second task cannot start beside the old one on a node.
    assert (update["parallelism"], update["order"], update["failure_action"]) == (1, "stop-first", "rollback")
    assert duration_seconds(update["monitor"]) >= 30
    assert deploy["rollback_config"]["order"] == "stop-first"


def test_every_service_restarts_and_rotates_its_logs(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service["deploy"]["restart_policy"]["condition"] == "any", name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert set(logging["options"]) >= {"max-size", "max-file"}, name


def test_python_services_get_the_design_settings(services: dict[str, Any]) -> None:
    for name in PY_SERVICES:
        environment = services[name]["environment"]
        assert environment["FLEET_LOG_FORMAT"] == "json"
        assert environment["FLEET_STATE_DIR"] == "/app"
    for name in ("remote_model_puller", "config_manager"):
        assert services[name]["environment"]["LOCAL_MODEL_DIRECTORY"] == "/local_saved_models"


def test_optional_variables_change_what_they_say(tmp_path: Path) -> None:
    result = stack_config(
        tmp_path,
        **REQUIRED_VARS,
        TFSERVING_IMAGE="tensorflow/serving:2.19.0-gpu",
        MODELFLEET_MODEL_DIR="/data/models",
        MODELFLEET_TFSERVING_MEMORY="20G",
        MODELFLEET_MASTER_PORT="8088",
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["tfserving"]["image"] == "tensorflow/serving:2.19.0-gpu"
    assert {mounts(services[name])["/local_saved_models"]["source"] for name in NODE_SERVICES} == {"/data/models"}
    assert int(services["tfserving"]["deploy"]["resources"]["reservations"]["memory"]) == 20 * 1024**3
    assert 8088 in published(services["master"])
