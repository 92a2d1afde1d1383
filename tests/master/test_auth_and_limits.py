"""Admin tokens on every mutation (401 without, 403 wrong), open reads, 413 for oversized bodies, 405 Allow."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from google.cloud import storage

from services.master.auth import match_admin, parse_admin_tokens
from tests.master.conftest import ADMIN, MasterHandle
from tests.master.support import put_version

MUTATIONS = [
    ("PUT", "/v1/models/ranker", {"pinned": [1]}),
    ("PUT", "/v1/models/ranker/labels/stable", {"version": 1}),
    ("DELETE", "/v1/models/ranker/labels/stable", None),
    ("POST", "/v1/models/ranker/rollback", None),
    ("POST", "/v1/cluster/sync", None),
    ("POST", "/v1/cluster/gc", None),
    ("POST", "/v1/nodes/node-1/sync", None),
    ("POST", "/v1/nodes/node-1/gc", None),
    ("GET", "/v1/audit", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_mutations_need_an_admin_token(
    bucket: storage.Bucket, start_master: Callable[..., MasterHandle], method: str, path: str, body: object
) -> None:
    put_version(bucket, "ranker", 1)
    master = start_master()
    with master.client() as client:
        missing = client.request(method, path, json=body)
        assert missing.status_code == 401 and missing.headers["content-type"] == "application/problem+json"
        wrong = client.request(method, path, json=body, headers={"Authorization": "Bearer fleet-secret"})
        assert wrong.status_code == 403
        assert client.request(method, path, json=body, headers=ADMIN).status_code not in (401, 403)


def test_reads_are_open_on_the_internal_network(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client() as client:
        for path in ("/v1/nodes", "/v1/cluster", "/v1/models", "/metrics", "/healthz", "/openapi.json"):
            assert client.get(path).status_code == 200, path


@pytest.fixture
def small_master(start_master: Callable[..., MasterHandle]) -> Iterator[MasterHandle]:
    yield start_master(max_body_bytes=1024)


def test_oversized_bodies_are_refused_declared_or_streamed(bucket: storage.Bucket, small_master: MasterHandle) -> None:
    put_version(bucket, "ranker", 1)
    big = {"pinned": [1], "labels": {f"l{i}": 1 for i in range(200)}}
    with small_master.client(headers=ADMIN) as client:
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
    with master.client(headers=ADMIN) as client:
        assert client.put("/v1/models/ranker", json={"pined": [1]}).status_code == 422
        assert client.put("/v1/models/ranker", json={"pinned": ["1"]}).status_code == 422
        assert client.put("/v1/models/ranker/labels/stable", json={"version": True}).status_code == 422


def test_wrong_method_lists_every_allowed_method(start_master: Callable[..., MasterHandle]) -> None:
    master = start_master()
    with master.client(headers=ADMIN) as client:
        r = client.get("/v1/models/ranker/labels/stable")
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"
        r = client.post("/v1/models/ranker")
        assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"
        assert client.get("/v1/models/ranker/nothing-here").status_code == 404


def test_admin_tokens_file_format() -> None:
    tokens = parse_admin_tokens("# ops\nalice: tok-a\n\nbob:tok-b:with-colon\n")
    assert tokens == {"tok-a": "alice", "tok-b:with-colon": "bob"}
    assert match_admin(tokens, "tok-b:with-colon") == "bob" and match_admin(tokens, "tok") is None
    for bad in ("", "# only comments\n", "alice\n", ":tok\n", "a:t\nb:t\n"):
        with pytest.raises(ValueError):
            parse_admin_tokens(bad)
