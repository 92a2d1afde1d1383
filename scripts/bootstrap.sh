#!/usr/bin/env bash
# Install everything the project needs into .venv (idempotent). Sourced by scripts/test.sh and scripts/fleet.sh.
set -euo pipefail
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]]; then
  echo "== installing uv $UV_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
echo "== uv sync (locked: uv.lock)"
uv sync --frozen --all-extras --quiet
# The dashboard's browser tests (tests/dashboard) drive Debian's chromium: Playwright never downloads a browser.
if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt-get install chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    # Not fatal here (scripts/fleet.sh needs no browser); tests/dashboard fails naming it.
    echo "warning: /usr/bin/chromium missing and not root: run 'apt-get install -y chromium' as root" >&2
  fi
fi
