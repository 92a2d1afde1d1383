"""A benchmark's working directory: removed at the end of the run, or kept (with the fleet's logs) on request."""

from __future__ import annotations

import shutil
from pathlib import Path


def finish(root: Path, *, keep: bool) -> None:
    """Remove ``root``, or say where it is when ``keep`` (``--keep``: read the fleet's logs afterwards)."""
    if keep:
        print(f"kept {root} (logs in {root / 'fleet' / 'logs'})")
    else:
        shutil.rmtree(root, ignore_errors=True)
