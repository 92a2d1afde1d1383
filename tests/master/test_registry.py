"""Registration: auth, upsert keyed by (hostname, role), stale/drop, persistence across restarts and kills."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.common.contracts import Registration
from services.master.registry import Registry, RegistryDocument
from tests.master.conftest import FLEET, MasterHandle
from tests.master.support import ADMIN_TOKENS, free_port

ROOT = Path(__file__).parents[2]


def reg(hostname: str, role: str = "puller", port: int = 8001) -> dict[str, str]:
    return {"hostname": hostname, "role": role, "base_url": f"http://{hostname}:{port}"}


def test_registration_needs_the_fleet_token_and_is_an_upsert(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client() as client:
        assert client.post("/v1/nodes/register", json=reg("n1")).status_code == 401
        wrong = client.post("/v1/nodes/register", json=reg("n1"), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"
        admin = {"Authorization": f"Bearer {ADMIN_TOKENS['alice']}"}
        assert client.post("/v1/nodes/register", json=reg("n1"), headers=admin).status_code == 401
        for _ in range(3):
            ok = client.post("/v1/nodes/register", json=reg("n1"), headers=FLEET)
            assert ok.status_code == 200 and ok.json()["stale_after_seconds"] == master.settings.node_stale_seconds
        client.post("/v1/nodes/register", json=reg("n1", "config_manager", 8002), headers=FLEET)
        moved = client.post("/v1/nodes/register", json=reg("n1", "config_manager", 8001), headers=FLEET)
        assert moved.status_code == 200  # the URL may change within the allow-list
        nodes = client.get("/v1/nodes").json()["nodes"]
        assert [n["hostname"] for n in nodes] == ["n1"]
        assert sorted(nodes[0]["sidecars"]) == ["config_manager", "puller"]
        assert nodes[0]["sidecars"]["config_manager"]["base_url"] == "http://n1:8001"
        bad = client.post("/v1/nodes/register", json={**reg("n1"), "hostname": "../x"}, headers=FLEET)
        assert bad.status_code == 422
        bad_role = client.post("/v1/nodes/register", json={**reg("n1"), "role": "tfserving"}, headers=FLEET)
        assert bad_role.status_code == 422


def test_master_calls_only_urls_its_allow_list_admits(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master(sidecar_addresses="{hostname}:8001,{hostname}:8002")  # production's default
    refused = [
        reg("n1", port=9001),  # another port
        {**reg("n1"), "base_url": "http://n2:8001"},  # another node's name
        {**reg("n1"), "base_url": "http://169.254.169.254:80"},  # the metadata server
        {**reg("n1"), "base_url": "http://user@n1:8001"},
        {**reg("n1"), "base_url": "http://n1:8001/?x=1"},
        {**reg("n1"), "base_url": "file:///etc/passwd"},
    ]
    with master.client() as client:
        for body in refused:
            r = client.post("/v1/nodes/register", json=body, headers=FLEET)
            assert r.status_code in (403, 422), body
            if r.status_code == 403:
                assert "FLEET_SIDECAR_ADDRESSES" in r.json()["detail"] or "not allowed" in r.json()["detail"]
        assert client.post("/v1/nodes/register", json=reg("n1"), headers=FLEET).status_code == 200
        assert client.post("/v1/nodes/register", json=reg("N2", port=8002), headers=FLEET).status_code == 200
        assert [n["hostname"] for n in client.get("/v1/nodes").json()["nodes"]] == ["N2", "n1"]
    master.stop()
    # Sidecars registered under an older, wider rule are forgotten at start, never called.
    narrower = start_master(master.settings.model_copy(update={"sidecar_addresses": "{hostname}:8002"}))
    with narrower.client() as client:
        nodes = client.get("/v1/nodes").json()["nodes"]
    assert [(n["hostname"], sorted(n["sidecars"])) for n in nodes] == [("N2", ["puller"])]


def test_registry_survives_a_master_restart(start_master: Callable[..., MasterHandle]) -> None:
    first = start_master()
    with first.client() as client:
        for i in range(5):
            assert client.post("/v1/nodes/register", json=reg(f"node-{i}"), headers=FLEET).status_code == 200
    first.stop()
    second = start_master(first.settings)
    with second.client() as client:
        nodes = client.get("/v1/nodes").json()["nodes"]
    assert [n["hostname"] for n in nodes] == [f"node-{i}" for i in range(5)]
    # Known again at once, but not healthy until polled (never seen healthy by this master).
    assert all(not n["healthy"] for n in nodes)


def test_silent_sidecars_turn_stale_then_are_dropped(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json", stale_after=60, drop_after=600)
    record, changed = registry.upsert(Registration(**reg("n1")), now=1000.0)
    assert changed is True
    assert registry.is_stale(record, now=1059.0) is False
    assert registry.is_stale(record, now=1061.0) is True
    assert registry.prune(now=1500.0) == [] and registry.hostnames() == ["n1"]
    # A heartbeat refreshes it; only silence past drop_after removes it.
    registry.upsert(Registration(**reg("n1")), now=1500.0)
    assert registry.prune(now=2000.0) == []
    assert [r.hostname for r in registry.prune(now=2101.0)] == ["n1"] and registry.hostnames() == []


async def test_an_unreadable_registry_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{not json")
    registry = Registry(path, stale_after=60, drop_after=600)
    assert registry.load() == 0
    assert [p.name.startswith("registry.json.unreadable-") for p in tmp_path.iterdir()] == [True]  # noqa: ASYNC240
    registry.upsert(Registration(**reg("n1")))
    await registry.save()
    assert [s.hostname for s in RegistryDocument.read(path).sidecars] == ["n1"]


def _spawn_master(tmp_path: Path, port: int, fake_gcs_url: str, bucket: str) -> subprocess.Popen[bytes]:
    (tmp_path / "fleet.token").write_text("fleet-secret\n")
    env = {
        **os.environ,
        "FLEET_PORT": str(port),
        "FLEET_HOST": "127.0.0.1",
        "FLEET_STATE_DIR": str(tmp_path / "state"),
        "FLEET_TOKEN_FILE": str(tmp_path / "fleet.token"),
        "REMOTE_MODEL_DIRECTORY": f"gs://{bucket}/models",
        "STORAGE_EMULATOR_HOST": fake_gcs_url,
        "FLEET_POLL_INTERVAL_SECONDS": "3600",
        "FLEET_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.master"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _master_process(tmp_path: Path, fake_gcs_url: str, bucket: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A master subprocess and its URL; always killed on the way out."""
    port = free_port()
    master = _spawn_master(tmp_path, port, fake_gcs_url, bucket)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_up(url)
        yield master, url
    finally:
        if master.poll() is None:
            master.kill()
        master.wait(timeout=10)


def _wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("master did not come up")


@pytest.mark.slow
def test_master_killed_mid_write_loses_no_acknowledged_registration(
    tmp_path: Path,
    fake_gcs,
    bucket,  # type: ignore[no-untyped-def]
) -> None:
    acked: set[str] = set()
    for round_number in range(2):
        with _master_process(tmp_path, fake_gcs.url, bucket.name) as (master, url):
            stop = threading.Event()

            def hammer(
                worker: int, round_number: int = round_number, url: str = url, stop: threading.Event = stop
            ) -> None:
                with httpx.Client(base_url=url, timeout=5, headers=FLEET) as client:
                    i = 0
                    while not stop.is_set():
                        hostname = f"r{round_number}-w{worker}-n{i}"
                        try:
                            r = client.post("/v1/nodes/register", json=reg(hostname))
                        except httpx.HTTPError:
                            return
                        if r.status_code == 200:
                            acked.add(hostname)
                        i += 1

            threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
            for t in threads:
                t.start()
            try:
                # Kill while registrations stream in (after a few acknowledgements, at a varying moment).
                before = len(acked)
                deadline = time.monotonic() + 20
                while len(acked) < before + 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05 * round_number)
                master.send_signal(signal.SIGKILL)
                master.wait(timeout=10)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=10)
        # The file is whole (never torn) and holds every registration master acknowledged.
        document = RegistryDocument.model_validate(json.loads((tmp_path / "state" / "registry.json").read_text()))
        stored = {s.hostname for s in document.sidecars}
        assert acked <= stored, sorted(acked - stored)[:5]
    assert len(acked) >= 10  # each round killed master after at least 5 acknowledgements
    # A restarted master starts from that file.
    with _master_process(tmp_path, fake_gcs.url, bucket.name) as (_, url):
        nodes = httpx.get(url + "/v1/nodes", timeout=10).json()["nodes"]
        assert acked <= {n["hostname"] for n in nodes}
