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
