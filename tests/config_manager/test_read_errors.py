"""A read error never drops a model: EIO, EACCES or a vanished model root while scanning the volume fails
the pass loudly (status alarm, log, metric) and leaves models.config and tfserving as they are.

EIO comes through the declared seam of ``scan_models`` (``listdir``); EACCES is real: the pass runs in a
process that drops to uid 10001, the sidecar's user in production (root ignores permissions).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common.errors import VolumeUnreadable
from services.common.tfs import TFServingClient
from services.config_manager.live import GRPC_OPTIONS
from services.config_manager.localdisk import scan_models
from services.config_manager.status import build_status
from tests.config_manager.conftest import Node, make_node, target

pytestmark = pytest.mark.slow

SIDECAR_UID = 10001
REPO_ROOT = Path(__file__).resolve().parents[2]


class EioSeam:
    """``scan_models``'s listdir that fails with EIO for one directory while ``failing`` is set."""

    def __init__(self, broken: Path) -> None:
        self.broken = broken
        self.failing = False

    def __call__(self, path: Path) -> contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]:
        if self.failing and Path(path) == self.broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return os.scandir(path)


async def _answer(node: Node, model: str) -> int:
    async with TFServingClient(node.target, options=GRPC_OPTIONS) as client:
        return (await client.predict(model, {"x": ([1.0], (1, 1))}, timeout=5)).version


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Node]:
    """A node serving m v1 and other v1, with v2 of m on disk and wanted (the pass would roll to it)."""
    async with make_node(tmp_path) as node:
        reconciler = node.reconciler()
        node.add_version("m", 1)
        node.add_version("other", 1)
        node.desire(m=target([1]), other=target([1]))
        assert await reconciler.run_now(), reconciler.last_error
        node.add_version("m", 2)
        node.desire(m=target([2]), other=target([1]))
        yield node


async def test_eio_while_scanning_fails_the_pass_and_changes_nothing(served: Node) -> None:
    node = served
    seam = EioSeam(node.root / "m")
    reconciler = node.reconciler(scan=functools.partial(scan_models, listdir=seam))
    config_before = node.config_file.read_text()
    seam.failing = True
    assert not await reconciler.run_now()
    assert "Input/output error" in (reconciler.last_error or "")
    assert node.config_file.read_text() == config_before
    assert await _answer(node, "m") == 1 and await _answer(node, "other") == 1
    status = build_status(reconciler, hostname="node", software_version="test")
    (alarm,) = [a for a in status.alarms if a.kind == "volume-unreadable"]
    assert alarm.severity == "critical" and "Input/output error" in alarm.message
    assert reconciler.metrics.reconciles.labels("volume_unreadable")._value.get() == 1

    seam.failing = False  # the disk recovers: the pass goes on with the roll it was asked for
    assert await reconciler.run_now(), reconciler.last_error
    assert await _answer(node, "m") == 2
    status = build_status(reconciler, hostname="node", software_version="test")
    assert [a.kind for a in status.alarms] == []


async def test_a_vanished_model_root_fails_the_pass_and_changes_nothing(served: Node) -> None:
    node = served
    reconciler = node.reconciler()
    config_before = node.config_file.read_text()
    moved = node.root.with_name("models-away")
    node.root.rename(moved)
    try:
        assert not await reconciler.run_now()
        assert "cannot read the model volume" in (reconciler.last_error or "")
        assert node.config_file.read_text() == config_before
        assert await _answer(node, "m") == 1
    finally:
        moved.rename(node.root)


_PASS_AS_SIDECAR = textwrap.dedent(
    """
    import asyncio, concurrent.futures.thread, json, os, sys  # imported before dropping to the sidecar's uid
    from services.common.tfs import TFServingClient
    from services.config_manager.live import GRPC_OPTIONS, LiveView
    from services.config_manager.metrics import Metrics
    from services.config_manager.reconciler import Reconciler
    from services.config_manager.settings import Settings
    from services.config_manager.status import build_status

    root, config_file, target = sys.argv[1:4]
    settings = Settings(
        local_model_directory=root, tensorflow_serving_config_file=config_file,
        tensorflow_serving_grpc_target=target, low_disk_free_bytes=0,
    )

    async def main():
        client = TFServingClient(target, options=GRPC_OPTIONS)
        live = LiveView(client, status_timeout=3.0, reload_timeout=10.0)
        reconciler = Reconciler(settings, live, Metrics())
        # One pass as root first (the node is converged: it writes nothing) so every module a pass
        # imports lazily is loaded while the interpreter's own files are still readable.
        assert await reconciler.run_now(), reconciler.last_error
        os.setgroups([])
        os.setgid(int(sys.argv[4]))
        os.setuid(int(sys.argv[4]))
        ok = await reconciler.run_now()
        alarms = [a.kind for a in build_status(reconciler, hostname="n", software_version="t").alarms]
        await client.close()
        print(json.dumps({"ok": ok, "error": reconciler.last_error, "alarms": alarms}))

    asyncio.run(main())
    """
)


def _run_pass_as(uid: int, node: Node) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-c", _PASS_AS_SIDECAR, str(node.root), str(node.config_file), node.target, str(uid)]
    result = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to uid 10001")
async def test_eacces_as_the_sidecar_user_fails_the_pass_and_changes_nothing() -> None:
    base = Path(tempfile.mkdtemp(prefix="modelfleet-uid-"))
    try:
        os.chmod(base, 0o755)
        async with make_node(base) as node:
            reconciler = node.reconciler()
            node.add_version("m", 1)
            node.add_version("other", 1)
            node.desire(m=target([1]), other=target([1]))
            assert await reconciler.run_now(), reconciler.last_error
            for directory, subdirs, files in os.walk(base):
                for name in [directory, *(os.path.join(directory, n) for n in subdirs + files)]:
                    os.chown(name, SIDECAR_UID, SIDECAR_UID, follow_symlinks=False)
            config_before = node.config_file.read_text()
            (node.root / "m").chmod(0o000)  # e.g. a model directory written by another user, umask 077
            result = _run_pass_as(SIDECAR_UID, node)
            assert result["ok"] is False and "Permission denied" in str(result["error"]), result
            assert "volume-unreadable" in result["alarms"]  # type: ignore[operator]
            assert node.config_file.read_text() == config_before
            assert await _answer(node, "m") == 1 and await _answer(node, "other") == 1
            (node.root / "m").chmod(0o775)
            healed = _run_pass_as(SIDECAR_UID, node)
            assert healed["ok"] is True, healed
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_scan_models_raises_instead_of_leaving_a_model_out(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "m" / "2").mkdir()  # no saved_model yet: not installed, not an error
    seam = EioSeam(tmp_path / "m")
    assert scan_models(tmp_path, listdir=seam) == {"m": frozenset({1})}
    seam.failing = True
    with pytest.raises(VolumeUnreadable, match="Input/output error"):
        scan_models(tmp_path, listdir=seam)
    with pytest.raises(VolumeUnreadable):
        scan_models(tmp_path / "gone")
