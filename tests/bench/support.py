"""Run a benchmark's ``--smoke`` mode the way a user would, and read its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: float) -> str:
    """``python bench/<name>/run.py ARGS`` → stdout; fails the test with the output tail."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name / "run.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def run_smoke(name: str, out: Path, *, timeout: float) -> tuple[dict[str, Any], str]:
    """``python bench/<name>/run.py --smoke --json out`` → (report, stdout)."""
    stdout = run_bench(name, "--smoke", "--json", str(out), timeout=timeout)
    return json.loads(out.read_text()), stdout
