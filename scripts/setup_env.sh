#!/usr/bin/env bash
# Sets up a fresh machine for mmjax: espeak-ng (through apt-get, if missing) and a virtual
# environment at .venv with the exact pinned packages of requirements.lock. A complete .venv
# (same lock file) is reused, so running this again costs a second.
#
#   ./scripts/setup_env.sh                        # CPU (tests, the demo)
#   ./scripts/setup_env.sh --accelerator=cuda     # + JAX's CUDA 12 plugin (requirements-cuda.lock)
#   ./scripts/setup_env.sh --accelerator=tpu      # + libtpu (requirements-tpu.lock)
#   ./scripts/setup_env.sh --interop              # + torch (CPU), transformers and the real
#                                                 #   checkpoint of the interop tests
#
# Each accelerator's lock adds the plugin pinned to the same jax/jaxlib as requirements.lock;
# switching accelerators rebuilds .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

accelerator=cpu
interop=0
for arg in "$@"; do
  case "$arg" in
    --accelerator=*) accelerator="${arg#*=}" ;;
    --interop) interop=1 ;;
    *) echo "setup_env.sh: unknown argument '$arg' (use --accelerator=cpu|cuda|tpu, --interop)." >&2
       exit 2 ;;
  esac
done
case "$accelerator" in
  cpu) lock=requirements.lock ;;
  cuda|tpu) lock="requirements-$accelerator.lock" ;;
  *) echo "setup_env.sh: --accelerator=$accelerator: use cpu, cuda or tpu." >&2; exit 2 ;;
esac

if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "== Installing espeak-ng (speech for the built-in dataset)"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "espeak-ng is missing and there is no apt-get here: install it yourself" \
         "(e.g. 'brew install espeak-ng' on macOS), then run this again." >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "mmjax is pinned for Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  exit 1
fi

locks=(requirements.lock)
[ "$lock" != requirements.lock ] && locks+=("$lock")
want=$(cat "${locks[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.complete 2>/dev/null)" != "$want" ]; then
  echo "== Creating .venv with the pinned packages of $lock (a few minutes the first time)"
  rm -rf .venv
  "$PYTHON" -m venv .venv
  # uv (pinned) installs the same pinned set in about 20 s where pip takes about 85 s; pip is
  # the fallback if uv cannot be installed or fails.
  if .venv/bin/pip install -q --disable-pip-version-check uv==0.13.10 \
      && .venv/bin/uv pip install -q --python .venv/bin/python -r "$lock"; then
    :
  else
    echo "== uv failed; installing with pip" >&2
    .venv/bin/pip install -q --disable-pip-version-check -r "$lock"
  fi
  echo "$want" > .venv/.complete  # Written last: a broken install is redone next time.
fi

# The interop environment (requirements-interop.lock, on top of the above): the reference
# libraries of mmjax.interop's parity tests. torch must be its CPU build: pip's own find-links
# (local wheels, where this machine has them) are handed to uv as well.
if [ "$interop" = 1 ]; then
  want=$(cat requirements-interop.lock "${locks[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat .venv/.interop-complete 2>/dev/null)" != "$want" ]; then
    echo "== Installing the interop environment (requirements-interop.lock: torch CPU, transformers)"
    links=()
    for l in ${PIP_FIND_LINKS:-} $(.venv/bin/pip config get global.find-links 2>/dev/null || true); do
      links+=(--find-links "$l")
    done
    if ! { [ -x .venv/bin/uv ] && .venv/bin/uv pip install -q --python .venv/bin/python --no-deps \
             "${links[@]}" -r requirements-interop.lock; }; then
      echo "== uv failed; installing with pip" >&2
      .venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-interop.lock
    fi
    echo "$want" > .venv/.interop-complete
  fi
fi
