#!/usr/bin/env bash
# Sets up this machine (see setup_env.sh), then runs the test suite. Extra arguments go to
# pytest, e.g. ./scripts/test.sh -k retrieval -x
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
