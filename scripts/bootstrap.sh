#!/usr/bin/env bash
# Install everything the project needs into .venv (idempotent). Sourced by scripts/test.sh and scripts/fleet.sh.
set -euo pipefail
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]]; then
  echo "== installing uv $UV_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
# The Pub/Sub emulator (event-driven sync tests and benches): a Debian package of Google's Cloud SDK
# repository plus a Java runtime. Tests that need it fail with a message naming the package without it.
sdk_root="$(dirname "$(dirname "$(readlink -f "$(command -v gcloud || echo /nonexistent)")")")"
if [[ ! -d "$sdk_root/platform/pubsub-emulator" ]] || ! command -v java >/dev/null 2>&1; then
  echo "== installing the Pub/Sub emulator (google-cloud-cli-pubsub-emulator, default-jre-headless)"
  if [[ "$(id -u)" == 0 ]]; then
    apt-get install -y -q google-cloud-cli-pubsub-emulator default-jre-headless >/dev/null \
      || echo "WARNING: apt-get could not install google-cloud-cli-pubsub-emulator; event tests will fail" >&2
  else
    echo "WARNING: not root: install google-cloud-cli-pubsub-emulator and a Java runtime yourself" >&2
  fi
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
