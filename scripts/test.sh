#!/usr/bin/env bash
# The README's test command: from a fresh clone, create the environment, install, lint, type-check, test.
# Fails on the first failing step. Extra arguments go to both pytest runs (e.g. -m "not slow" for a quick
# local run). The suite runs on PYTEST_WORKERS (2) workers, a test file per worker at a time; the benchmark
# smoke runs (tests/bench) measure latency and throughput, so they run afterwards, alone.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bootstrap.sh

echo "== ruff check"
.venv/bin/ruff check services tests bench scripts
echo "== ruff format --check"
.venv/bin/ruff format --check services tests bench scripts
echo "== mypy --strict services"
.venv/bin/mypy services
workers="${PYTEST_WORKERS:-2}"
echo "== pytest on ${workers} workers (everything but tests/bench)"
status=0
.venv/bin/pytest -p no:cacheprovider -ra -n "$workers" --dist loadfile --ignore=tests/bench "$@" || status=$?
echo "== pytest tests/bench (benchmark smoke runs, alone)"
.venv/bin/pytest -p no:cacheprovider -ra tests/bench "$@" || { rc=$?; [ "$rc" -eq 5 ] || status=$rc; }
[ "$status" -eq 5 ] && status=0  # a selection that leaves one of the two runs empty
exit "$status"
