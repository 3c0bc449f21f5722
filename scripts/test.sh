#!/usr/bin/env bash
# Sets up this machine (see setup_env.sh; with --interop, the reference libraries of the parity
# tests), then runs the test suite on 2 worker processes (pytest-xdist; a test file's tests stay
# together, sharing its fixtures). Extra arguments go
# to pytest, e.g. ./scripts/test.sh -k retrieval -x, or -n 0 to run in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh --interop
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
