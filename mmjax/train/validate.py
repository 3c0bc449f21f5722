"""Config checks that run before anything is built or compiled.

Each failure is one UserError naming the key, the bad value and what would be accepted.
Unknown keys never get this far: configs are locked, so `--config.modle.size=S` already fails
when the flags are parsed.
"""
import copy
import os
import tempfile

import jax
from absl import logging

from mmjax import evaluate
from mmjax import modality as modality_lib
from mmjax import objectives as objective_lib
from mmjax.errors import UserError
from mmjax.models import mmt
from mmjax.parallel import mesh as mesh_lib
from mmjax.paths import expand_path
from mmjax.train import memory

NONFINITE_POLICIES = ("stop", "skip")  # config.on_nonfinite (mmjax.train.monitors.NonFiniteGuard).
# Config fields that name a file or folder: '~' and $VARIABLES in them are expanded where the
# config enters (expand_paths), as a shell would; the shell does not in `--workdir=~/x`.
PATH_KEYS = ("data.dir", "data.vocab_file", "init_from")


def expand_paths(config, workdir=None):
  """(config, workdir) with '~' and $VARIABLES expanded in the workdir and in the config's
  PATH_KEYS, so that `--workdir=~/x` is never a folder named '~' in the current directory and
  a resume compares the paths it will use. `config` (a ConfigDict, or a recorded config's
  dict) is copied if a path in it changes."""
  workdir = expand_path(workdir, "--workdir")
  changed = {}
  for key in PATH_KEYS:
    value = _dotted(config, key)
    if isinstance(value, str) and (new := expand_path(value, f"config.{key}")) != value:
      changed[key] = new
  if changed:
    config = (config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references")
              else copy.deepcopy(config))
    for key, value in changed.items():
      parent, _, leaf = key.rpartition(".")
      (_dotted(config, parent) if parent else config)[leaf] = value
  return config, workdir


def _dotted(config, key):
  """config['a']['b'] for key 'a.b', or None where a part is missing."""
  node = config
  for part in key.split("."):
    node = node.get(part) if hasattr(node, "get") else None
  return node


def _check(ok, key, value, expected):
  if not ok:
    raise UserError(f"config.{key}={value!r} is out of range: expected {expected}.")


def profile_steps(config):
  """(start, end) steps to trace from config.profile.steps ('START:END', inclusive), or None
  when it is empty (or the config has no profile section)."""
  spec = config.get("profile", {}).get("steps", "")
  if not spec:
    return None
  try:
    start, end = (int(s) for s in str(spec).split(":"))
  except ValueError:
    start = end = None
  if start is None or not 1 <= start <= end:
    raise UserError(f"config.profile.steps={spec!r}: use 'START:END', steps counted from 1 with "
                    "START <= END, e.g. '10:12' (empty: no profile).")
  return start, end


def check_config(config):
  """Raises UserError for the first out-of-range value in a training config."""
  _check(config.total_steps > 0, "total_steps", config.total_steps, "a positive integer")
  _check(config.batch_size > 0, "batch_size", config.batch_size, "a positive integer")
  _check(config.on_nonfinite in NONFINITE_POLICIES, "on_nonfinite", config.on_nonfinite,
         "'stop' (end the run, naming the step and metric) or 'skip' (skip the update, count it)")
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    _check(config[key] > 0, key, config[key], "a positive integer")

  opt = config.optimizer
  _check(opt.lr > 0, "optimizer.lr", opt.lr, "a positive learning rate")
  _check(opt.warmup_steps >= 0, "optimizer.warmup_steps", opt.warmup_steps, ">= 0")
  _check(0 <= opt.min_lr_ratio <= 1, "optimizer.min_lr_ratio", opt.min_lr_ratio, "in [0, 1]")
  _check(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, ">= 0")
  for key in ("b1", "b2"):
    _check(0 <= opt[key] < 1, f"optimizer.{key}", opt[key], "in [0, 1)")
  _check(opt.grad_clip > 0, "optimizer.grad_clip", opt.grad_clip, "a positive norm")

  profile_steps(config)
  mmt.check_config(config.model)
  _check_evaluator_types(config)

  objectives = config.objectives
  for name, obj in objectives.items():
    objective_lib.check_config(name, obj)
    _check(obj.weight >= 0, f"objectives.{name}.weight", obj.weight, ">= 0 (0 switches it off)")
    if "mask_ratio" in obj:
      _check(0 <= obj.mask_ratio < 1, f"objectives.{name}.mask_ratio", obj.mask_ratio,
             "in [0, 1): the fraction of tokens hidden")
  if not any(obj.weight > 0 for obj in objectives.values()):
    raise UserError("config.objectives: every weight is 0, so there is nothing to train.")
  if (objective_lib.embedding_view(objectives) == "masked"
      and config.model.fusion == "joint"):
    raise UserError("config.objectives: a view='masked' (embeddings pooled from the masked "
                    "pass) needs model.fusion='separate': in a joint sequence each modality's "
                    "tokens have seen the others.")


def check_parallel(config, mesh):
  """The loop, accumulation and batch size must fit the mesh."""
  par = config.parallel
  _check(par.loop in ("jit", "pmap"), "parallel.loop", par.loop, "'jit' or 'pmap'")
  _check(par.grad_accum_steps >= 1, "parallel.grad_accum_steps", par.grad_accum_steps,
         "a positive integer (1: no accumulation)")
  if par.loop == "pmap" and (mesh.shape["fsdp"] > 1 or mesh.shape["tensor"] > 1):
    raise UserError(f"config.parallel.loop='pmap' is data parallel only, but config.mesh asks "
                    f"for {dict(mesh.shape)}; use loop='jit' for fsdp / tensor parallelism.")
  dp = mesh_lib.data_parallel_size(mesh, mesh_lib.batch_axes(par.rules))
  per_device = config.batch_size // dp if config.batch_size % dp == 0 else None
  if per_device is None:
    raise UserError(f"config.batch_size={config.batch_size} must be divisible by the "
                    f"data-parallel size {dp} (mesh {dict(mesh.shape)}).")
  if per_device % par.grad_accum_steps:
    raise UserError(f"config.batch_size={config.batch_size} gives {per_device} rows per "
                    f"device, which config.parallel.grad_accum_steps={par.grad_accum_steps} "
                    "micro-batches must divide.")


def _check_evaluator_types(config):
  """Each config.evals entry's type names an evaluator (mmjax.evaluate), and its sizes are
  positive: checked before the dataset is built, which can take minutes on first use, and
  long before the first evaluation."""
  for name, cfg in config.get("evals", {}).items():
    evaluate.EVALUATORS.get(cfg.get("type"), key=f"config.evals.{name}.type")
    for key in ("batch_size", "num_images"):  # Else only found at the first evaluation.
      if key in cfg:
        _check(cfg[key] > 0, f"evals.{name}.{key}", cfg[key], "a positive integer")


def _split_names(split):
  """The dataset splits a TFDS split string reads: 'train[:10%]+test' -> ['train', 'test']."""
  return [part.split("[", 1)[0].strip() for part in str(split).split("+")]


def check_modalities(config, info):
  """The config against the prepared dataset (`info`, before anything is built or compiled):
  objectives ask only for modalities the dataset has, every eval split exists, and the model's
  patches fit its inputs (image patches divide the images, audio fills at least one patch)."""
  for name, obj in config.objectives.items():
    modality = objective_lib.modality(name)
    if modality and obj.weight > 0 and modality not in info.modalities:
      raise UserError(f"config.objectives.{name} needs {modality!r}, but dataset "
                      f"{info.name!r} has only {list(info.modalities)}; set its weight to 0.")
  if info.split_sizes:  # Empty: a dataset described by shapes alone (scripts/plan.py).
    for name, cfg in config.get("evals", {}).items():
      if "split" not in cfg:
        continue
      missing = [s for s in _split_names(cfg.split) if s not in info.split_sizes]
      if missing:
        raise UserError(f"config.evals.{name}.split={cfg.split!r}: dataset {info.name!r} has "
                        f"no split {missing[0]!r}; it has {sorted(info.split_sizes)}.")
  inputs = config.model.get("inputs") or info.modalities  # The classifier's, or all.
  for modality in modality_lib.ordered(m for m in info.modalities if m in inputs):
    modality_lib.get(modality).token_grid(config.model, info)


def _gib(n):
  return f"{n / memory.GIB:.1f} GiB"


def check_memory(config, info, mesh, abstract_state, state_shardings):
  """Refuses a run whose estimated memory per device (mmjax.train.memory: exact for the state,
  its update and its checkpoint copy, rough for activations, measured for XLA's runtime), plus
  memory.MARGIN, exceeds what one device has, naming the estimate, the memory and the
  settings that would help; config.check_memory=False runs it anyway. Call it with the
  trainer's abstract state and its shardings, before anything is allocated or compiled."""
  numbers = memory.estimate(config, info, mesh, abstract_state, state_shardings)
  limit, where = memory.device_bytes()
  parts = (f"parameters {_gib(numbers['params'])} + optimizer state "
           f"{_gib(numbers['opt_state'])} + gradients {_gib(numbers['grads'])} + activations "
           f"{_gib(numbers['activations'])} (a rough estimate) + optimizer update "
           f"{_gib(numbers['update'])}")
  if numbers["checkpoint"] or numbers["runtime"]:  # CPU devices: host RAM.
    parts += (f" + checkpoint host copy {_gib(numbers['checkpoint'])} + XLA runtime and "
              f"evaluation {_gib(numbers['runtime'])}")
  logging.info("Memory per device: about %s (%s); a device has %s (%s).",
               _gib(numbers["total"]), parts, _gib(limit), where)
  if not memory.refuses(numbers, limit):
    return
  what = (f"config.model.size={config.model.size!r} with config.batch_size={config.batch_size} "
          f"needs about {_gib(numbers['total'])} per device ({parts}); with a margin of "
          f"{memory.MARGIN:.0%} for the estimate's error (docs/memory.md), that is more than a "
          f"device has: {_gib(limit)} ({where})")
  if not config.get("check_memory", True):
    logging.warning("%s; running anyway (config.check_memory=False).", what)
    return
  helps = []
  fsdp_axes = str(config.parallel.rules.embed)
  if jax.device_count() > 1 and (mesh.shape["fsdp"] == 1 or "fsdp" not in fsdp_axes):
    helps.append(f"shard parameters and optimizer state over the {jax.device_count()} devices "
                 "with strategy=fsdp in the config argument (configs/<file>.py:strategy=fsdp), "
                 "or --config.mesh.data=1 --config.mesh.fsdp=-1 "
                 "--config.parallel.rules.embed=fsdp"
                 + (" (and --config.parallel.loop=jit)" if config.parallel.loop == "pmap"
                    else ""))
  if config.model.remat != "full":
    helps.append("--config.model.remat=full (recompute each block's activations in the "
                 "backward pass; 'dots' keeps its matmuls)")
  if config.model.dtype == "float32":
    helps.append("--config.model.dtype=bfloat16 (halves activations)")
  helps.append("a smaller --config.batch_size, or --config.parallel.grad_accum_steps=N (the "
               "same batch as N micro-batches)")
  helps.append("a smaller --config.model.size")
  raise UserError(f"{what}. To fit: {'; '.join(helps)}. To run anyway: "
                  "--config.check_memory=False.")


def check_workdir(workdir):
  """The workdir must be creatable and writable before hours of compute depend on it."""
  if not workdir:
    raise UserError("--workdir is required: where checkpoints and metrics go.")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise UserError(f"--workdir={workdir!r} cannot be written: {e.strerror}.") from None
