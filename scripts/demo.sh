#!/usr/bin/env bash
# Sets up this machine (see setup_env.sh), then runs the default pretraining on the built-in
# dataset and prints the retrieval results. Extra arguments go to main.py, e.g.
#   ./scripts/demo.sh --workdir=/tmp/run1 --config.total_steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
# absl keeps the last value of a repeated flag, so a --workdir in "$@" wins over this default.
exec .venv/bin/python main.py --config=configs/pretrain_digits.py --workdir=workdirs/digits "$@"
