r"""mmjax entry point: flags only; the work happens in mmjax.train.trainer.

  python main.py --config=configs/pretrain_digits.py --workdir=workdirs/digits
  python main.py --config=configs/pretrain_digits.py:runlocal --workdir=/tmp/x \
      --config.batch_size=32

Several processes (pods, clusters, local testing): docs/launching.md.
"""
import difflib
import importlib.util
import os
import sys

# TensorFlow (used only to build datasets) is chatty at import time.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mmjax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/pretrain_digits.py[:args].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs (docs/launching.md). Clusters JAX can detect (TPU pod slices, SLURM) need
# none of these; scripts/launch_local.sh sets them to run several processes on one machine.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process: 0 .. num_processes-1.")


def _load_config_file(argv):
  """The config that `--config=path[:arg]` in argv names, without the overrides."""
  spec = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _unknown_override(argv):
  """The first `--config.a.b=v` in argv whose key the config lacks, with a suggestion."""
  config = _load_config_file(argv)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, path = config, arg[len("--config."):].split("=", 1)[0]
    for part in path.split("."):
      if not hasattr(node, "keys") or part not in node:
        options = list(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(part, options, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{arg}: the config has no key {path!r}.{hint}"
      node = node[part]
  return None


def _parse_flags(argv):
  """absl's parser, but an override of a key the (locked) config lacks is one clear message
  rather than a traceback from inside ml_collections."""
  try:
    return flags.FLAGS(argv)
  except UserError as e:  # From a config file's get_config(arg).
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError):
    message = _unknown_override(argv)
    if message is None:
      raise
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class _QuietLibraries(logging.logging.Filter):
  """Orbax logs every step of every save at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_logger().addFilter(_QuietLibraries())
  from mmjax.parallel import distributed  # pylint: disable=g-import-not-at-top
  try:
    # First, before anything touches a device: each process joins the others.
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from mmjax.train import trainer  # pylint: disable=g-import-not-at-top
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    # Problems with what the user gave us: one clear message, no traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
