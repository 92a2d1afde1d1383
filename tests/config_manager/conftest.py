"""A node for config_manager tests: a model volume in a tmp dir, models.config, a real local_serving."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.atomic import atomic_write_json
from services.common.contracts import LocalDesired, LocalModelTarget, Manifest, ManifestObject
from services.common.contracts.local import desired_path, manifest_path
from services.common.errors import TFServingError
from services.common.tfs import TFServingClient
from services.config_manager.live import GRPC_OPTIONS, LiveView
from services.config_manager.localdisk import free_bytes, prepare_volume, scan_models
from services.config_manager.metrics import Metrics
from services.config_manager.reconciler import Reconciler
from services.config_manager.settings import Settings
from tests.support.savedmodels import write_corrupt_model, write_model
from tests.support.serving import ServingProcess, free_port, production_flags, start_local_serving

#: Production conditions: the stack's own tfserving flags, read from swarm-deploy.yml.
SERVING_FLAGS = production_flags()

_generations = itertools.count(int(time.time() * 1000))


@dataclass
class Node:
    """One simulated node: LOCAL dir, models.config, local_serving and a config_manager reconciler."""

    root: Path
    config_file: Path
    port: int
    serving: ServingProcess | None = None
    free_space: Callable[[Path], int] = free_bytes
    reconcilers: list[Reconciler] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "local_model_directory": self.root,
            "tensorflow_serving_config_file": self.config_file,
            "tensorflow_serving_grpc_target": self.target,
            "sync_interval_seconds": 0.5,
            "load_wait_seconds": 20.0,
            "status_poll_interval_seconds": 0.1,
            "load_start_grace_seconds": 3.0,
            "low_disk_free_bytes": 0,
            "status_timeout_seconds": 3.0,
            "reload_timeout_seconds": 10.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def reconciler(
        self, *, scan: Callable[[Path], dict[str, frozenset[int]]] | None = None, **overrides: object
    ) -> Reconciler:
        settings = self.settings(**overrides)
        client = TFServingClient(self.target, options=GRPC_OPTIONS)
        live = LiveView(
            client, status_timeout=settings.status_timeout_seconds, reload_timeout=settings.reload_timeout_seconds
        )
        reconciler = Reconciler(
            settings, live, Metrics(), free_space=lambda p: self.free_space(p), scan=scan or scan_models
        )
        reconciler.prepare()
        self.reconcilers.append(reconciler)
        return reconciler

    def add_version(
        self,
        model: str,
        version: int,
        *,
        corrupt: bool = False,
        changed_signature: bool = False,
        padding_bytes: int = 0,
        nan_answers: bool = False,
    ) -> Path:
        """Install a version the way the puller does: the directory, then its manifest."""
        if corrupt:
            path = write_corrupt_model(self.root / model, version, kind="truncated_pb")
        else:
            path = write_model(
                self.root / model,
                version,
                changed_signature=changed_signature,
                padding_bytes=padding_bytes,
                nan_answers=nan_answers,
            )
        self.write_manifest(model, version)
        return path

    def write_manifest(self, model: str, version: int) -> None:
        version_dir = self.root / model / str(version)
        objects = [
            ManifestObject(name=str(p.relative_to(version_dir)), size=p.stat().st_size, generation=next(_generations))
            for p in sorted(version_dir.rglob("*"))
            if p.is_file()
        ]
        manifest = Manifest(model=model, version=version, objects=objects, total_bytes=sum(o.size for o in objects))
        atomic_write_json(manifest_path(self.root, model, version), manifest)

    def desire(self, **models: LocalModelTarget) -> None:
        atomic_write_json(desired_path(self.root), LocalDesired(models=dict(models)))

    def start_serving(self, **overrides: object) -> ServingProcess:
        """Start local_serving with the production flags; ``overrides`` (e.g. local-only flags) by name."""
        flags = production_flags(**overrides) if overrides else SERVING_FLAGS
        self.serving = start_local_serving(self.config_file, port=self.port, extra_args=flags, timeout=90)
        return self.serving

    def stop_serving(self) -> None:
        if self.serving is not None:
            self.serving.stop()
            self.serving = None


def target(serve: list[int], keep: list[int] | None = None, **kw: object) -> LocalModelTarget:
    """A desired.json entry."""
    return LocalModelTarget(serve=serve, keep=keep or [], **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def make_node(tmp_path: Path, **serving_flags: object) -> AsyncIterator[Node]:
    """A node whose local_serving starts (production flags + ``serving_flags``) from the models.config
    config_manager prepared (empty)."""
    root = tmp_path / "models"
    config_file = tmp_path / "serving_config" / "models.config"
    prepare_volume(root, config_file)
    n = Node(root=root, config_file=config_file, port=free_port())
    await asyncio.to_thread(n.start_serving, **serving_flags)
    try:
        yield n
    finally:
        for reconciler in n.reconcilers:
            await reconciler.stop()
            await reconciler.live.client.close()
        n.stop_serving()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with local_serving under the stack's flags."""
    async with make_node(tmp_path) as n:
        yield n


@dataclass
class PredictLoop:
    """Predict calls in a loop while a test changes things; counts failures and versions seen."""

    client: TFServingClient
    model: str
    label: str | None = None
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await self.client.predict(self.model, {"x": ([1.0], (1, 1))}, label=self.label, timeout=5)
            except TFServingError as exc:
                self.failures.append(f"{exc.code}: {exc.detail}")
            else:
                answer = round(result.outputs["y"][0])
                if not self.versions or self.versions[-1] != answer:
                    self.versions.append(answer)
            self.calls += 1
            await asyncio.sleep(0.005)

    async def reached(self, version: int, *, timeout: float = 10.0) -> bool:
        """Wait (bounded) until the loop has been answered by ``version``; the reload returning does not
        mean this loop has made a call since, so a test checks what it saw only after this."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (self.versions and self.versions[-1] == version):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


@contextlib.asynccontextmanager
async def predict_loop(node: Node, model: str, *, label: str | None = None) -> AsyncIterator[PredictLoop]:
    """Run a :class:`PredictLoop` for the duration of the block."""
    client = TFServingClient(node.target, options=GRPC_OPTIONS)
    loop = PredictLoop(client, model, label)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await task
        await client.close()
