"""One TensorFlow minor release: the stack's default tfserving image names it, everything else follows.

The default of ``TFSERVING_IMAGE`` in swarm-deploy.yml (``tensorflow/serving:X.Y.Z-gpu``) is the one
place the release is chosen. The `serving` extra of pyproject.toml, uv.lock and the installed
``tensorflow`` / ``tensorflow-serving-api`` (the local model server, the wire tests) must run the same
X.Y, so that what is tested here is what the fleet serves. Upgrading the image is an operator's
decision; it bumps the extra (and re-locks) in the same change, and this test says so when it does not.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.conftest import REPO, STACK_FILE

PYPROJECT = REPO / "pyproject.toml"
LOCK_FILE = REPO / "uv.lock"
TF_PACKAGES = ("tensorflow", "tensorflow-serving-api")

_IMAGE_DEFAULT = re.compile(r"\$\{TFSERVING_IMAGE:-tensorflow/serving:(?P<version>[^}\s]+?)-gpu\}")
_LISTED_DEFAULT = re.compile(r"^#\s+TFSERVING_IMAGE\s+tensorflow/serving:(?P<version>\S+?)-gpu\b", re.MULTILINE)

Minor = tuple[int, int]


def _minor(version: str) -> Minor:
    release = Version(version).release
    return release[0], release[1] if len(release) > 1 else 0


def _show(minor: Minor) -> str:
    return f"{minor[0]}.{minor[1]}"


def stack_minor(stack_text: str) -> Minor:
    """The X.Y of the stack's default tfserving image; the header listing the default must agree."""
    images = _IMAGE_DEFAULT.findall(stack_text)
    listed = _LISTED_DEFAULT.findall(stack_text)
    assert images, "swarm-deploy.yml: no `${TFSERVING_IMAGE:-tensorflow/serving:X.Y.Z-gpu}` default found"
    assert listed, "swarm-deploy.yml: the header lists no `TFSERVING_IMAGE  tensorflow/serving:X.Y.Z-gpu` default"
    assert len(set(images)) == 1, f"swarm-deploy.yml: several tfserving image defaults: {sorted(set(images))}"
    assert set(listed) == set(images), (
        f"swarm-deploy.yml: the header lists TFSERVING_IMAGE default {listed[0]} "
        f"but the tfserving service defaults to {images[0]}"
    )
    return _minor(images[0])


def serving_extra_pins(pyproject_text: str) -> dict[str, Requirement]:
    """The serving extra's requirement on each TensorFlow package."""
    extra = tomllib.loads(pyproject_text)["project"]["optional-dependencies"]["serving"]
    requirements = {Requirement(line).name: Requirement(line) for line in extra}
    return {name: requirements[name] for name in TF_PACKAGES if name in requirements}


def locked_versions(lock_text: str) -> dict[str, list[str]]:
    """The versions uv.lock holds for each TensorFlow package."""
    locked: dict[str, list[str]] = {name: [] for name in TF_PACKAGES}
    for package in tomllib.loads(lock_text)["package"]:
        if package["name"] in locked:
            locked[package["name"]].append(package["version"])
    return locked


def tensorflow_drift(
    *, stack_text: str, pyproject_text: str, lock_text: str, installed: Mapping[str, str | None]
) -> list[str]:
    """Every place whose TensorFlow minor release differs from the stack's default image (empty: none)."""
    want = stack_minor(stack_text)
    major, minor = want
    problems: list[str] = []
    pins = serving_extra_pins(pyproject_text)
    for name in TF_PACKAGES:
        pin = pins.get(name)
        if pin is None:
            problems.append(f"pyproject.toml: the serving extra does not pin {name}")
            continue
        # Exactly one minor release: X.Y admitted, the releases either side not.
        admits = any(pin.specifier.contains(f"{major}.{minor}.{patch}") for patch in range(100))
        admits_next = pin.specifier.contains(f"{major}.{minor + 1}.0")
        admits_previous = minor > 0 and pin.specifier.contains(f"{major}.{minor - 1}.99")
        if not admits or admits_next or admits_previous:
            problems.append(
                f"pyproject.toml: serving extra pins `{pin}`, want `{name}>={_show(want)},<{major}.{minor + 1}`"
            )
    for name, versions in locked_versions(lock_text).items():
        if not versions:
            problems.append(f"uv.lock: no {name} locked")
        for version in versions:
            if _minor(version) != want:
                problems.append(f"uv.lock: {name} {version} is locked, not a {_show(want)}.x release")
    for name in TF_PACKAGES:
        version = installed.get(name)
        if version is None:
            problems.append(f".venv: {name} is not installed (scripts/bootstrap.sh installs the serving extra)")
        elif _minor(version) != want:
            problems.append(f".venv: {name} {version} is installed, not a {_show(want)}.x release")
    if problems:
        problems.insert(
            0,
            f"swarm-deploy.yml's default tfserving image runs TensorFlow {_show(want)}; "
            "the serving extra, uv.lock and .venv must run the same minor release "
            "(bump pyproject.toml's serving extra, `uv lock`, scripts/bootstrap.sh):",
        )
    return problems


def _installed_now() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in TF_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _texts() -> dict[str, str]:
    return {
        "stack_text": STACK_FILE.read_text(),
        "pyproject_text": PYPROJECT.read_text(),
        "lock_text": LOCK_FILE.read_text(),
    }


def test_serving_extra_lock_and_venv_run_the_stack_tfserving_minor_release() -> None:
    problems = tensorflow_drift(**_texts(), installed=_installed_now())
    assert not problems, "\n  ".join(problems)


# Drifted copies of the real files, built from whatever release the stack names today.
def _next_minor_image(texts: dict[str, str], *, where: str) -> dict[str, str]:
    major, minor = stack_minor(texts["stack_text"])
    old = f"tensorflow/serving:{major}.{minor}."
    new = f"tensorflow/serving:{major}.{minor + 1}."
    lines = texts["stack_text"].splitlines(keepends=True)
    header = [i for i, line in enumerate(lines) if _LISTED_DEFAULT.match(line)]
    service = [i for i, line in enumerate(lines) if _IMAGE_DEFAULT.search(line)]
    for i in {"header": header, "service": service, "both": header + service}[where]:
        lines[i] = lines[i].replace(old, new)
    return {**texts, "stack_text": "".join(lines)}


def _widened_extra(texts: dict[str, str]) -> dict[str, str]:
    major, minor = stack_minor(texts["stack_text"])
    pyproject = texts["pyproject_text"].replace(
        f'"tensorflow>={major}.{minor},<{major}.{minor + 1}"', f'"tensorflow>={major}.{minor},<{major + 1}"'
    )
    assert pyproject != texts["pyproject_text"]
    return {**texts, "pyproject_text": pyproject}


def _other_locked_version(texts: dict[str, str]) -> dict[str, str]:
    major, minor = stack_minor(texts["stack_text"])
    lock = re.sub(
        rf'(\nname = "tensorflow-serving-api"\nversion = "){major}\.{minor}\.',
        rf"\g<1>{major}.{minor + 1}.",
        texts["lock_text"],
    )
    assert lock != texts["lock_text"]
    return {**texts, "lock_text": lock}


DRIFTS: dict[str, tuple[Callable[[dict[str, str]], dict[str, str]], str]] = {
    "image bumped alone": (lambda t: _next_minor_image(t, where="both"), "pyproject.toml: serving extra pins"),
    "service default only": (lambda t: _next_minor_image(t, where="service"), "the header lists"),
    "header only": (lambda t: _next_minor_image(t, where="header"), "the header lists"),
    "extra admits several minors": (_widened_extra, "pyproject.toml: serving extra pins `tensorflow"),
    "lock elsewhere": (_other_locked_version, "uv.lock: tensorflow-serving-api"),
}


@pytest.mark.parametrize("drift", DRIFTS, ids=list(DRIFTS))
def test_a_drifted_copy_fails_with_a_message_naming_the_place(drift: str) -> None:
    mutate, expected = DRIFTS[drift]
    texts = mutate(_texts())
    try:
        problems = tensorflow_drift(**texts, installed=_installed_now())
    except AssertionError as error:
        problems = [str(error)]
    assert any(expected in problem for problem in problems), problems


def test_an_installed_tensorflow_of_another_minor_release_fails() -> None:
    major, minor = stack_minor(STACK_FILE.read_text())
    installed = {**_installed_now(), "tensorflow": f"{major}.{minor + 1}.0"}
    problems = tensorflow_drift(**_texts(), installed=installed)
    assert any(p.startswith(f".venv: tensorflow {major}.{minor + 1}.0 is installed") for p in problems), problems
