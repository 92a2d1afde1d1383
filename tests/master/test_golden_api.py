"""Golden sets through master and fleetctl: validated against the version serving now (its signatures read
from the bucket by ranges), guarded by If-Match, audited, readable with a read token only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage

from services.local_fleet.savedmodels import write_model
from tests.master.conftest import ADMIN, READER, MasterHandle
from tests.master.support import fleetctl, put_version

MODEL = "ranker"


def upload_dir(bucket: storage.Bucket, version_dir: Path, model: str, version: int) -> None:
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        bucket.blob(f"models/{model}/{version}/{path.relative_to(version_dir).as_posix()}").upload_from_filename(
            str(path)
        )


def request(name: str, rows: list[list[float]], **outputs: Any) -> dict[str, Any]:
    return {"name": name, "rest": {"instances": rows}, "checks": {"outputs": outputs or {"y": {"min": 0, "max": 100}}}}


def golden_set(*requests: dict[str, Any]) -> dict[str, Any]:
    return {"model": MODEL, "requests": list(requests)}


@pytest.fixture
def master(bucket: storage.Bucket, start_master: Callable[..., MasterHandle], tmp_path: Path) -> MasterHandle:
    upload_dir(bucket, write_model(tmp_path / "models", 1), MODEL, 1)
    return start_master()


def test_upload_is_checked_against_the_serving_version_guarded_and_audited(
    master: MasterHandle, bucket: storage.Bucket
) -> None:
    good = golden_set(request("one", [[1.0], [2.0]], y={"shape": [2, 1], "values": [[1.0], [2.0]]}))
    with master.client(headers=ADMIN) as admin, master.client(headers=READER) as reader:
        assert admin.put(f"/v1/golden/{MODEL}", json=good).status_code == 428
        assert reader.put(f"/v1/golden/{MODEL}", json=good, headers={"If-Match": "0"}).status_code == 403

        # Requests that do not fit version 1's signature are refused, each named.
        bad = golden_set(
            {"name": "wrong-input", "rest": {"inputs": {"z": [[1.0]]}}},
            request("wrong-output", [[1.0]], score={"min": 0}),
            {"name": "wrong-shape", "rest": {"instances": [[1.0, 2.0]]}},
        )
        answer = admin.put(f"/v1/golden/{MODEL}", json=bad, headers={"If-Match": "0"})
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert "3 golden request(s) do not fit version 1" in detail
        assert "wrong-input" in detail and "wrong-output" in detail and "'score'" in detail and "wrong-shape" in detail
        typo = golden_set({**request("typo", [[1.0]]), "chekcs": {}})
        assert admin.put(f"/v1/golden/{MODEL}", json=typo, headers={"If-Match": "0"}).status_code == 422
        assert admin.put("/v1/golden/other", json=good, headers={"If-Match": "0"}).status_code == 422

        created = admin.put(f"/v1/golden/{MODEL}", json=good, headers={"If-Match": "0"})
        assert created.status_code == 200, created.text
        change = created.json()
        assert change["validated_against"] == 1 and change["requests"] == 1
        assert created.headers["etag"] == f'"{change["generation"]}"'
        # Create-only again, and a stale generation: 412; nothing changed.
        assert admin.put(f"/v1/golden/{MODEL}", json=good, headers={"If-Match": "0"}).status_code == 412
        assert admin.put(f"/v1/golden/{MODEL}", json=good, headers={"If-Match": '"12345"'}).status_code == 412

        read = reader.get(f"/v1/golden/{MODEL}")
        assert read.status_code == 200 and read.headers["etag"] == created.headers["etag"]
        assert read.json()["updated_by"] == "alice" and read.json()["requests"][0]["name"] == "one"
        stored = json.loads(bucket.blob(f"models/_fleet/golden/{MODEL}.json").download_as_bytes())
        assert stored["requests"] == read.json()["requests"]
        listing = reader.get("/v1/golden").json()["sets"]
        assert [(s["model"], s["requests"], s["digest"]) for s in listing] == [(MODEL, 1, change["digest"])]
        audit = reader.get("/v1/audit", params={"model": MODEL}).json()["entries"]
        assert audit[0]["actor"] == "alice" and audit[0]["action"].startswith("golden set (1 requests")

        # A larger body than other writes take (64 KiB) is fine for a golden set: 20,000 rows.
        big = golden_set(request("many-rows", [[float(i % 7)] for i in range(20_000)]))
        replaced = admin.put(f"/v1/golden/{MODEL}", json=big, headers={"If-Match": created.headers["etag"]})
        assert replaced.status_code == 200, replaced.text[:300]

        # A newer version whose graph is unreadable cannot vouch for a set: 422, the stored set stays.
        put_version(bucket, MODEL, 2)
        answer = admin.put(f"/v1/golden/{MODEL}", json=good, headers={"If-Match": "*"})
        assert answer.status_code == 422 and "version 2" in answer.json()["detail"], answer.text
        assert reader.get(f"/v1/golden/{MODEL}").json()["requests"][0]["name"] == "many-rows"

        stale = admin.delete(f"/v1/golden/{MODEL}", headers={"If-Match": created.headers["etag"]})
        assert stale.status_code == 412
        removed = admin.delete(f"/v1/golden/{MODEL}", headers={"If-Match": replaced.headers["etag"]})
        assert removed.status_code == 200 and removed.json()["generation"] == 0
        assert reader.get(f"/v1/golden/{MODEL}").status_code == 404
        assert (
            reader.get("/v1/audit", params={"model": MODEL}).json()["entries"][0]["action"].startswith("golden remove")
        )


def test_fleetctl_golden_add_list_show_remove(master: MasterHandle, tmp_path: Path) -> None:
    requests_file = tmp_path / "requests.json"
    requests_file.write_text(json.dumps([request("one", [[3.0]], y={"values": [[3.0]]})]))
    code, out = fleetctl(master, "golden", "add", MODEL, str(requests_file))
    assert code == 0 and "1 requests" in out and "fits version 1" in out, out
    code, out = fleetctl(master, "golden", "list")
    assert code == 0 and MODEL in out, out
    code, out = fleetctl(master, "golden", "show", MODEL)
    assert code == 0 and json.loads(out)["requests"][0]["name"] == "one"
    # Replacing sends the ETag it read (no 412 on the second add).
    code, out = fleetctl(master, "golden", "add", MODEL, str(requests_file))
    assert code == 0, out
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps([{"name": "bad", "rest": {"instances": [["text"]]}}]))
    code, out = fleetctl(master, "golden", "add", MODEL, str(bad_file))
    assert code == 1 and "422" in out and "bad" in out, out
    code, out = fleetctl(master, "golden", "remove", MODEL)
    assert code == 0 and "removed" in out, out
    code, out = fleetctl(master, "golden", "remove", MODEL)
    assert code == 1 and "404" in out, out
