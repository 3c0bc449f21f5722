"""Config checks that run before anything is built or compiled.

Each failure is one UserError naming the key, the bad value and what would be accepted.
Unknown keys never get this far: configs are locked, so `--config.modle.size=S` already fails
when the flags are parsed.
"""
import os
import tempfile

from mmjax import objectives as objective_lib
from mmjax.errors import UserError
from mmjax.models import mmt
from mmjax.parallel import mesh as mesh_lib



def _check(ok, key, value, expected):
  if not ok:
    raise UserError(f"config.{key}={value!r} is out of range: expected {expected}.")


def profile_steps(config):
  """(first, last) steps to trace from config.profile.steps ('START:END', inclusive), or None
  when it is empty (or the config has no profile section)."""
  spec = config.get("profile", {}).get("steps", "")
  if not spec:
    return None
  try:
    first, last = (int(s) for s in str(spec).split(":"))
  except ValueError:
    first = last = None
  if first is None or not 1 <= first <= last:
    raise UserError(f"config.profile.steps={spec!r}: use 'START:END', steps counted from 1 with "
                    "START <= END, e.g. '10:12' (empty: no profile).")
  return first, last


def check_config(config):
  """Raises UserError for the first out-of-range value in a training config."""
  _check(config.total_steps > 0, "total_steps", config.total_steps, "a positive integer")
  _check(config.batch_size > 0, "batch_size", config.batch_size, "a positive integer")
  _check(config.on_nonfinite in ("stop", "skip"), "on_nonfinite", config.on_nonfinite,
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

  objectives = config.objectives
  for name, obj in objectives.items():
    objective_lib.check_config(name, obj)
    _check(obj.weight >= 0, f"objectives.{name}.weight", obj.weight, ">= 0 (0 switches it off)")
    if "mask_ratio" in obj:
      _check(0 <= obj.mask_ratio < 1, f"objectives.{name}.mask_ratio", obj.mask_ratio,
             "in [0, 1): the fraction of tokens hidden")
  if not any(obj.weight > 0 for obj in objectives.values()):
    raise UserError("config.objectives: every weight is 0, so there is nothing to train.")
  contrastive = objectives.get("contrastive")
  if (contrastive and contrastive.weight > 0 and contrastive.view == "masked"
      and config.model.fusion == "joint"):
    raise UserError("config.objectives.contrastive.view='masked' needs model.fusion='separate': "
                    "in a joint sequence each modality's tokens have seen the others.")


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


def check_modalities(config, info):
  """Objectives must only ask for modalities the dataset has."""
  for name, obj in config.objectives.items():
    modality = objective_lib.modality(name)
    if modality and obj.weight > 0 and modality not in info.modalities:
      raise UserError(f"config.objectives.{name} needs {modality!r}, but dataset "
                      f"{info.name!r} has only {list(info.modalities)}; set its weight to 0.")


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
