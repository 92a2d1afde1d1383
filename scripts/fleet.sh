#!/usr/bin/env bash
# The README's run command: install everything, start a local fleet (fake GCS, master, 3 nodes),
# publish an example model and show it served. Ctrl-C stops everything. Extra arguments go to
# `python -m services.local_fleet up` (e.g. --nodes 5 --master-port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/python -m services.local_fleet up "$@"
