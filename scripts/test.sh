#!/usr/bin/env bash
# The README's test command: from a fresh clone, create the environment, install, lint, type-check, test.
# Fails on the first failing step. Extra arguments go to pytest (e.g. -m "not slow" for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bootstrap.sh

echo "== ruff check"
.venv/bin/ruff check services tests bench scripts
echo "== ruff format --check"
.venv/bin/ruff format --check services tests bench scripts
echo "== mypy --strict services"
.venv/bin/mypy services
echo "== pytest"
.venv/bin/pytest -p no:cacheprovider -ra "$@"
