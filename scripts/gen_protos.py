"""Regenerate ``services/common/tfs/_generated`` from ``services/common/tfs/proto``.

Usage (from the repository root)::

    .venv/bin/python scripts/gen_protos.py          # rewrite the generated modules
    .venv/bin/python scripts/gen_protos.py --check  # exit 1 if the committed modules have drifted

protoc writes ``modelfleet/tfs/<name>_pb2.py`` importing ``from modelfleet.tfs import ...``; this
script flattens them into the ``_generated`` subpackage and rewrites those imports so the package is
importable as ``services.common.tfs._generated``. The descriptor pool still sees the file names
``modelfleet/tfs/<name>.proto`` and the proto package ``modelfleet.tfs``, which is what lets these
messages sit in one process beside ``tensorflow-serving-api``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "services" / "common" / "tfs" / "proto"
PROTO_PACKAGE_DIR = Path("modelfleet") / "tfs"
OUT_DIR = REPO / "services" / "common" / "tfs" / "_generated"
GENERATED_PACKAGE = "services.common.tfs._generated"

HEADER = "# Regenerate with: .venv/bin/python scripts/gen_protos.py (do not edit by hand)\n"
INIT_TEXT = '"""Protobuf modules generated from ../proto by scripts/gen_protos.py; do not edit by hand."""\n'
_IMPORT_RE = re.compile(r"^from modelfleet\.tfs import (\w+_pb2) as ", re.MULTILINE)


def proto_files() -> list[Path]:
    """The .proto sources, as paths relative to the include root (what protoc and the pool see)."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))


def run_protoc(out: Path) -> None:
    """Run grpcio-tools' protoc on every source, writing the raw output under ``out``."""
    well_known = resources.files("grpc_tools") / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        *(str(p) for p in proto_files()),
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT, timeout=120)


def render_generated() -> dict[str, str]:
    """File name -> final text of every module of the ``_generated`` package."""
    files: dict[str, str] = {"__init__.py": INIT_TEXT}
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(Path(tmp))
        for path in sorted((Path(tmp) / PROTO_PACKAGE_DIR).glob("*_pb2.py")):
            text = _IMPORT_RE.sub(rf"from {GENERATED_PACKAGE} import \1 as ", path.read_text())
            if "from modelfleet" in text or "import modelfleet" in text:
                raise SystemExit(f"{path.name}: an import of modelfleet.* was not rewritten")
            files[path.name] = HEADER + text
    return files


def check(files: dict[str, str]) -> int:
    """Compare ``files`` with what is in OUT_DIR; print a diff and return 1 on any drift."""
    on_disk = {p.name: p.read_text() for p in OUT_DIR.glob("*.py")} if OUT_DIR.is_dir() else {}
    drift = 0
    for name in sorted(set(files) | set(on_disk)):
        want, have = files.get(name), on_disk.get(name)
        if want == have:
            continue
        drift = 1
        if want is None:
            print(f"stale generated file: {name}")
        elif have is None:
            print(f"missing generated file: {name}")
        else:
            diff = difflib.unified_diff(have.splitlines(), want.splitlines(), name, name, lineterm="")
            print("\n".join(list(diff)[:40]))
    print("generated code is up to date" if not drift else "generated code drifted: run scripts/gen_protos.py")
    return drift


def write(files: dict[str, str]) -> None:
    """Replace OUT_DIR's generated modules with ``files`` (stale *_pb2.py are removed)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for stale in OUT_DIR.glob("*_pb2.py"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT_DIR.relative_to(REPO)}")


def main() -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated code drifted")
    args = parser.parse_args()
    files = render_generated()
    if args.check:
        return check(files)
    write(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
