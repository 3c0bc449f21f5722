"""The command line of main.py: its flags, their parsing (every problem with them is one line
on stderr and exit code 2, not a traceback or a usage dump), and the run they start. main.py
is only `run()`; tests/hang_save_main.py runs `main` with `parse_flags` under a patched Orbax.
"""
import difflib
import importlib.util
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mmjax.errors import UserError
from mmjax.paths import expand_path

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/pretrain_digits.py[:args].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and pictures go.")
# Both are required; parse_flags says so in one line (absl's own check exits 1 with a usage).
# Multi-process runs (docs/launching.md). Clusters JAX can detect (TPU pod slices, SLURM) need
# none of these; scripts/launch_local.sh sets them to run several processes on one machine.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process: 0 .. num_processes-1.")


def _config_spec(argv):
  """The `path[:arg]` that `--config=...` (or `--config ...`) in argv gives, or None."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(argv):
  """The config that `--config=path[:arg]` in argv names, without the overrides."""
  path, _, arg = _config_spec(argv).partition(":")
  module_spec = importlib.util.spec_from_file_location("_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _config_value(config, path):
  """(found, value) of the dotted `path` in `config`."""
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False, None
    node = node[part]
  return True, node


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


def _missing_config_file(argv):
  """The message for a `--config` file that cannot be loaded."""
  spec = _config_spec(argv) or ""
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    return f"--config={spec}: no such file {path!r} (from {os.getcwd()})."
  return f"--config={spec}: cannot load the config file {path!r}."


def _illegal_value(argv, error):
  """The message for absl's IllegalFlagValueError `error` ("flag --NAME=VALUE: WHY"): for a
  config override, the type the key takes and its current value."""
  match = re.match(r"flag --([\w.]+)=(.*?): (.*)", str(error), re.DOTALL)
  if not match:
    return str(error).splitlines()[0]
  name, value, why = match.groups()
  if name.startswith("config."):
    found, current = _config_value(_load_config_file(argv), name[len("config."):])
    if found and current is not None:
      kind = type(current).__name__
      return (f"--{name}={value}: {name} takes a{'n' if kind[0] in 'aeiou' else ''} {kind} "
              f"(now {current!r}), and {value!r} is not one.")
  return f"--{name}={value}: {why.splitlines()[0]}"


def _fail(message):
  """A problem with what the user gave us: one line on stderr, exit code 2, no traceback."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _expand_path_flags(argv):
  """argv with '~' and $VARIABLES expanded in the --config file and --workdir, which the shell
  leaves as they are after `=` (the config's own path fields expand in the trainer)."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    for name in ("--config", "--workdir"):
      if arg.startswith(name + "="):
        at, value = i, arg[len(name) + 1:]
      elif arg == name and i + 1 < len(argv):
        at, value = i + 1, argv[i + 1]
      else:
        continue
      path, colon, config_arg = value.partition(":") if name == "--config" else (value, "", "")
      expanded = expand_path(path, name) + colon + config_arg
      argv[at] = f"{name}={expanded}" if at == i else expanded
  return argv


def parse_flags(argv):
  """absl's parser, but every problem with the flags (an unknown config key, a value of the
  wrong type, a missing config file or --workdir) is one line on stderr and exit code 2
  rather than a traceback or absl's usage dump."""
  try:
    argv = _expand_path_flags(argv)
    rest = flags.FLAGS(argv)
  except UserError as e:  # From a config file's get_config(arg).
    _fail(e)
  except (AttributeError, KeyError):
    message = _unknown_override(argv)
    if message is None:
      raise
    _fail(message)
  except OSError:  # Overrides of a config file that did not load.
    _fail(_missing_config_file(argv))
  except flags.IllegalFlagValueError as e:
    if "Error whilst parsing config file" in str(e):
      raise  # A bug in the config file: its traceback is the useful part.
    _fail(_illegal_value(argv, e))
  except flags.Error as e:  # An unknown flag, a flag without its value.
    _fail(str(e).splitlines()[0])
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/pretrain_digits.py:runlocal.")
  try:
    _CONFIG.value.keys()
  except OSError:  # ml_collections defers a load failure to the first access.
    _fail(_missing_config_file(argv))
  if not _WORKDIR.value:
    _fail("--workdir is required: the directory for checkpoints, metrics and pictures, "
          "e.g. --workdir=workdirs/digits.")
  return rest


class _QuietLibraries(logging.logging.Filter):
  """Orbax logs every step of every save at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or "/orbax/" not in record.pathname


def _requested_evals():
  """Evaluators the command line names (--config.evals.<name>...): one of these that cannot
  run on the dataset is an error; the config file's others are switched off with a notice."""
  return tuple(a[len("--config.evals."):].split(".")[0].split("=")[0] for a in sys.argv[1:]
               if a.startswith("--config.evals."))


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
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, requested_evals=_requested_evals())
  except UserError as e:
    # Problems with what the user gave us: one clear message, no traceback.
    _fail(e)




def run():
  """Parses the flags and runs `main`; Ctrl-C in set-up says how to resume."""
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:
    # In set-up, or a second Ctrl-C in training (the first saves and stops: preemption.py).
    # Checkpoints already saved are complete: the same command resumes from the last one.
    print("Interrupted (Ctrl-C) before the next checkpoint; run the same command to resume "
          "from the last one.", file=sys.stderr)
    sys.exit(130)
