#!/usr/bin/env bash
# Sets up this machine (see setup_env.sh; with --interop, the reference libraries of the parity
# tests), then runs the test suite on 3 worker processes (pytest-xdist; a test file's tests stay
# together, sharing its fixtures). Three on a 2-core machine: a worker that compiles uses one
# core, so a third keeps both busy (a fresh clone on the 2-core dev machine: 589 s against 615 s
# with 2 workers, back to back). Extra arguments go to pytest, e.g. ./scripts/test.sh -k
# retrieval -x, or -n 0 to run in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh --interop
exec .venv/bin/python -m pytest -n 3 --dist loadfile "$@"
