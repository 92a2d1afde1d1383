"""The wire layer stays light (no TensorFlow) and its generated code never drifts from the .proto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RSS_LIMIT_MB = 120

PROBE = """
import json, sys
import services.common.tfs
from services.common.tfs import TFServingClient, render_config
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({
    "tensorflow": any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules),
    "tensorflow_serving": any(m.startswith("tensorflow_serving") for m in sys.modules),
    "numpy": "numpy" in sys.modules,
    "rss_kb": int(status["VmRSS"].split()[0]),
}))
"""


def test_importing_the_wire_layer_does_not_import_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    probe = json.loads(result.stdout)
    rss_mb = probe["rss_kb"] / 1024
    print(f"fresh interpreter after 'import services.common.tfs': VmRSS {rss_mb:.1f} MB")
    assert probe["tensorflow"] is False
    assert probe["tensorflow_serving"] is False
    assert probe["numpy"] is False
    assert rss_mb < RSS_LIMIT_MB


def test_generated_code_matches_the_proto_sources() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
