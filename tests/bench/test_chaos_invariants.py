"""bench/chaos's invariant checks can fail: a partial version dir is seen, a failed call with no fault on its
node is unexplained, a corrupt version answering is never excused (no fleet: files and records only)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.chaos.invariants import Window, attribute, close_windows, partial_version_problems
from bench.chaos.load import Call
from services.local_fleet.fleet import Node


def _node(tmp_path: Path) -> Node:
    node = Node("node-1", tmp_path, grpc_port=1, rest_port=2, puller_port=3, config_manager_port=4)
    node.model_dir.mkdir(parents=True)
    return node


def _version(node: Node, model: str, name: str, files: dict[str, int]) -> Path:
    base = node.model_dir / model / name
    for rel, size in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"x" * size)
    return base


def _manifest(node: Node, model: str, version: int, files: dict[str, int]) -> None:
    path = node.model_dir / ".fleet" / "manifests" / model / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    objects = [{"name": n, "size": s, "crc32c": "AAAAAA==", "generation": 1} for n, s in files.items()]
    path.write_text(json.dumps({"model": model, "version": version, "objects": objects, "total_bytes": 0}))


WHOLE = {"saved_model.pb": 10, "variables/variables.index": 5, "variables/variables.data-00000-of-00001": 20}


def test_whole_versions_pass_partial_ones_are_reported(tmp_path: Path) -> None:
    node = _node(tmp_path)
    _version(node, "m", "1", WHOLE)  # no manifest yet (written right after the rename): judged by its files
    _version(node, "m", "2", WHOLE)
    _manifest(node, "m", 2, WHOLE)
    assert partial_version_problems(node) == []

    _version(node, "m", "3", {"variables/variables.index": 5, "variables/variables.data-00000-of-00002": 20})
    _version(node, "m", "4", {"saved_model.pb": 10, "variables/variables.data-00000-of-00001": 20})
    _version(node, "m", "5", {**WHOLE, "variables/variables.data-00000-of-00001": 7})  # truncated vs manifest
    _manifest(node, "m", 5, WHOLE)
    _version(node, "m", "006", WHOLE)
    problems = "\n".join(partial_version_problems(node))
    assert "m/3: no saved_model.pb" in problems
    assert "m/4: variables.index missing" in problems
    assert "m/5: files" in problems and "!= manifest" in problems
    assert "m/006: not a canonical version directory" in problems
    assert "m/1:" not in problems and "m/2:" not in problems


def test_failures_are_explained_only_by_a_fault_on_their_node(tmp_path: Path) -> None:
    down = Window("node-2", "server down", start=10.0)
    answered_again = Call(20.0, 0.01, "node-2", "m", None, 1)
    close_windows([down], [Call(5.0, 0.01, "node-2", "m", None, 1), answered_again])
    assert down.end == 20.0  # the first answer after the window opened closes it

    in_flight = Call(9.7, 0.6, "node-2", "m", "UNAVAILABLE")  # began before the kill, failed by it
    during = Call(15.0, 0.0, "node-2", "m", "UNAVAILABLE")
    after = Call(21.0, 0.6, "node-2", "m", "DEADLINE_EXCEEDED")
    other_node = Call(15.0, 0.6, "node-1", "m", "DEADLINE_EXCEEDED")
    corrupt = Call(15.0, 0.01, "node-2", "m", "CORRUPT_VERSION_SERVED", 4)
    assert attribute(in_flight, [down]) == "server down"
    assert attribute(during, [down]) == "server down"
    assert attribute(after, [down]) == "unexplained DEADLINE_EXCEEDED"
    assert attribute(other_node, [down]) == "unexplained DEADLINE_EXCEEDED"
    assert attribute(corrupt, [down]) == "unexplained CORRUPT_VERSION_SERVED"
    # A missed deadline while the client's own loop was frozen is the client's, not a server's.
    assert attribute(other_node, [down], stalls=[(15.2, 0.3)]) == "client stalled"
    assert attribute(Call(15.0, 0.0, "node-1", "m", "UNAVAILABLE"), [down], stalls=[(15.0, 0.3)]).startswith(
        "unexplained"
    )
