"""Roles (read routes need a read token, writes an admin token: 401 without or wrong, 403 read-only), 428
without If-Match, auth on by default, 413 for oversized bodies, 405 Allow."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.cloud import storage

from services.common.auth import Principal, TokenBook, refuse_open_start
from tests.master.conftest import ADMIN, ADMIN_ANY, READER, MasterHandle
from tests.master.support import put_version

READS = ["/v1/nodes", "/v1/nodes/node-1", "/v1/cluster", "/v1/models", "/v1/models/ranker", "/v1/audit", "/v1/state"]
WRITES = [
    ("PUT", "/v1/models/ranker", {"pinned": [1]}),
    ("PUT", "/v1/models/ranker/labels/stable", {"version": 1}),
    ("DELETE", "/v1/models/ranker/labels/stable", None),
    ("POST", "/v1/models/ranker/rollback", None),
    ("POST", "/v1/cluster/sync", None),
    ("POST", "/v1/cluster/gc", None),
    ("POST", "/v1/nodes/node-1/sync", None),
    ("POST", "/v1/nodes/node-1/gc", None),
    ("POST", "/v1/state/restore", None),
    ("POST", "/v1/state/accept", None),
]
WRONG = {"Authorization": "Bearer fleet-secret"}  # the fleet token is not a tokens-file token


def test_reads_need_a_read_token_writes_an_admin_token_health_and_metrics_stay_open(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "ranker", 1)
    master = start_master()
    with master.client(headers={}) as client:
        for path in READS:
            missing = client.get(path)
            assert missing.status_code == 401 and missing.headers["content-type"] == "application/problem+json", path
            assert client.get(path, headers=WRONG).status_code == 401, path
            assert client.get(path, headers=READER).status_code not in (401, 403), path
        for method, path, body in WRITES:
            assert client.request(method, path, json=body).status_code == 401, path
            assert client.request(method, path, json=body, headers=WRONG).status_code == 401, path
            read_only = client.request(method, path, json=body, headers={**READER, "If-Match": "*"})
            assert read_only.status_code == 403 and "read role" in read_only.json()["detail"], path
            assert client.request(method, path, json=body, headers=ADMIN_ANY).status_code not in (401, 403), path
        for path in ("/healthz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        spec = client.get("/openapi.json").json()
        assert spec["paths"]["/v1/models/{model}"]["put"]["security"] == [{"HTTPBearer": []}]
        assert "428" in spec["paths"]["/v1/models/{model}"]["put"]["responses"]


def test_writes_without_if_match_get_428_and_change_nothing(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "ranker", 1)
    master = start_master()
    with master.client(headers=ADMIN) as client:
        for method, path, body in WRITES[:4] + WRITES[8:]:
            r = client.request(method, path, json=body)
            assert r.status_code == 428, path
            assert r.headers["content-type"] == "application/problem+json" and "If-Match" in r.json()["detail"]
        assert client.post("/v1/cluster/sync").status_code == 200  # operations change no document
    assert not bucket.blob("models/_fleet/state.json").exists()


@pytest.fixture
def small_master(start_master: Callable[..., MasterHandle]) -> Iterator[MasterHandle]:
    yield start_master(max_body_bytes=1024)


def test_oversized_bodies_are_refused_declared_or_streamed(bucket: storage.Bucket, small_master: MasterHandle) -> None:
    put_version(bucket, "ranker", 1)
    big = {"pinned": [1], "labels": {f"l{i}": 1 for i in range(200)}}
    with small_master.client() as client:
        declared = client.put("/v1/models/ranker", json=big)
        assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"

        def chunks() -> Iterator[bytes]:
            yield b'{"pinned": [1], "labels": {'
            for i in range(200):
                yield f'"l{i}": 1, '.encode()
            yield b'"last": 1}}'

        streamed = client.put("/v1/models/ranker", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert client.put("/v1/models/ranker", json={"pinned": [1]}).status_code == 200
    assert bucket.blob("models/_fleet/state.json").exists()


def test_unknown_fields_and_wrong_types_in_a_policy_are_refused(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle]
) -> None:
    put_version(bucket, "ranker", 1)
    master = start_master()
    with master.client() as client:
        assert client.put("/v1/models/ranker", json={"pined": [1]}).status_code == 422
        assert client.put("/v1/models/ranker", json={"pinned": ["1"]}).status_code == 422
        assert client.put("/v1/models/ranker/labels/stable", json={"version": True}).status_code == 422


def test_wrong_method_lists_every_allowed_method(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client() as client:
        r = client.get("/v1/models/ranker/labels/stable")
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"
        r = client.post("/v1/models/ranker")
        assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"
        assert client.get("/v1/models/ranker/nothing-here").status_code == 404


def test_tokens_file_format_roles_and_matching() -> None:
    book = TokenBook.parse("# ops\nalice: tok-a\n\nbob:tok-b:with-colon\nread grafana:tok-r\nadmin carol:tok-c\n")
    assert book.match("tok-a") == Principal("alice", "admin")
    assert book.match("tok-b:with-colon") == Principal("bob", "admin")
    assert book.match("tok-r") == Principal("grafana", "read") and book.match("tok-c") == Principal("carol", "admin")
    assert book.match("tok") is None and book.match("tok-r ") is None
    assert book.match("tok-r").may("read") and not book.match("tok-r").may("admin")  # type: ignore[union-attr]
    assert book.roles() == {"read": 1, "admin": 3}
    for bad in ("", "# only comments\n", "alice\n", ":tok\n", "a:t\nb:t\n", "write dave:t\n", "a b c:t\n"):
        with pytest.raises(ValueError):
            TokenBook.parse(bad)


@pytest.mark.parametrize(
    ("host", "auth", "refused"),
    [
        ("0.0.0.0", "enabled", True),
        ("10.1.2.3", "enabled", True),
        ("0.0.0.0", "disabled", False),
        ("127.0.0.1", "enabled", False),
        ("::1", "enabled", False),
        ("localhost", "enabled", False),
    ],
)
def test_auth_is_on_by_default_off_loopback(host: str, auth: str, refused: bool, tmp_path: Path) -> None:
    if refused:
        with pytest.raises(SystemExit) as exited:
            refuse_open_start(host=host, auth=auth, required={"FLEET_TOKEN_FILE": None}, service="puller")
        assert exited.value.code == 2
    else:
        refuse_open_start(host=host, auth=auth, required={"FLEET_TOKEN_FILE": None}, service="puller")
    refuse_open_start(host=host, auth=auth, required={"FLEET_TOKEN_FILE": tmp_path / "t"}, service="puller")


def test_master_refuses_to_start_on_the_network_without_token_files(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "FLEET_HOST": "0.0.0.0",
        "FLEET_STATE_DIR": str(tmp_path),
        "FLEET_LOG_FORMAT": "text",
        "FLEET_TOKEN_FILE": str(tmp_path / "fleet.token"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.master"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "refuses to start" in done.stderr and "FLEET_ADMIN_TOKENS_FILE" in done.stderr
    assert "FLEET_AUTH=disabled" in done.stderr
