"""The sidecars' shared library never pulls in TensorFlow (memory budget)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_importing_services_common_does_not_import_tensorflow() -> None:
    code = (
        "import sys, services.common, services.common.contracts, services.common.completeness, "
        "services.common.gcs, services.common.worker, services.common.problems; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
