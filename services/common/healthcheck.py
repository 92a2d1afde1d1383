"""A Docker HEALTHCHECK without curl: ``python -m services.common.healthcheck [URL]``.

Exit 0 when the URL answers 2xx within the timeout, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float = 3.0) -> bool:
    """True if ``url`` answers with a 2xx status within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = os.environ.get("FLEET_PORT", "8000")
    url = args[0] if args else f"http://127.0.0.1:{port}/healthz"
    ok = check(url)
    if not ok:
        sys.stderr.write(f"healthcheck failed: {url}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
