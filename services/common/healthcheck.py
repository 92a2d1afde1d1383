"""A Docker HEALTHCHECK without curl: ``python -m services.common.healthcheck [URL]``.

Exit 0 when the URL answers 2xx within the timeout, 1 otherwise. On failure the reason (the 503
problem's detail naming the failed checks, or the connection error) goes to stderr, which Docker keeps
in ``docker inspect --format '{{json .State.Health}}' <container>``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(True, "") if ``url`` answers 2xx within ``timeout`` seconds, else (False, why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
            return 200 <= status < 300, f"HTTP {status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {_detail(exc.read(8192))}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(exc)


def _detail(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:500]
    detail = document.get("detail") if isinstance(document, dict) else None
    if isinstance(detail, str):
        return detail
    return json.dumps(document)[:500]


def check(url: str, timeout: float = 3.0) -> bool:
    """True if ``url`` answers with a 2xx status within ``timeout`` seconds."""
    return probe(url, timeout)[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = os.environ.get("FLEET_PORT", "8000")
    url = args[0] if args else f"http://127.0.0.1:{port}/healthz"
    ok, why = probe(url)
    if not ok:
        sys.stderr.write(f"healthcheck failed: {url}: {why}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
