"""Training objectives, looked up by name: `get("masked_image")` imports
mmjax.objectives.masked_image and returns its `loss(outputs, cfg, ctx) -> Terms`.

Any module here that defines `loss` is an objective; the others (masking, masked_modeling,
chunked_contrastive) are helpers.

Losses are returned as sums over examples or tokens and their counts, not as means: the trainer
adds them up over devices (pmap), processes and gradient-accumulation micro-batches before it
divides, so every way of splitting a batch gives the same loss as the whole batch at once.
"""
import importlib
import pkgutil
import typing

from jax import lax

from mmjax.errors import UserError
from mmjax.parallel import mesh as mesh_lib


class Terms(typing.NamedTuple):
  """What an objective returns.

  sums: {name: (numerator, denominator)}; the metric is sum(numerators) / sum(denominators)
    over every shard of the global batch. 'loss' is required; the trainer weights it.
  values: {name: scalar} metrics that are the same on every shard (e.g. a learned temperature).
  """
  sums: dict
  values: dict


class Context(typing.NamedTuple):
  """Where an objective runs. axis_name: None under jit on global arrays; the mapped axis (or
  axes) when the objective sees only this device's rows (pmap, shard_map). mesh: the jit mesh,
  for objectives that shard_map parts of themselves; batch_axes: the mesh axes the batch is
  split over on it (config.parallel.rules.batch)."""
  axis_name: typing.Any = None
  mesh: typing.Any = None
  batch_axes: tuple = mesh_lib.STRATEGY_BATCH_AXES

  def total(self, x):
    """Sum over every shard of the batch (identity on global arrays)."""
    return x if self.axis_name is None else lax.psum(x, self.axis_name)


def available():
  """Names of the objective modules in this package."""
  names = []
  for info in pkgutil.iter_modules(__path__):
    if hasattr(importlib.import_module(f"{__name__}.{info.name}"), "loss"):
      names.append(info.name)
  return sorted(names)


def modality(name):
  """The modality a masked-modeling objective reconstructs (its module's MODALITY), or None."""
  return getattr(_module(name), "MODALITY", None)


def check_config(name, cfg):
  """Runs objective `name`'s own config checks, if its module has any (`check_config(cfg)`)."""
  module = _module(name)  # An unknown name fails here, listing the known ones.
  if hasattr(module, "check_config"):
    module.check_config(cfg)


def get(name):
  """The `loss` function of objective module `name`."""
  return _module(name).loss


def _module(name):
  module = None
  if name.isidentifier():
    try:
      module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{name}":
        raise  # A real import error inside the module: keep its traceback.
  if module is None or not hasattr(module, "loss"):
    raise UserError(f"Unknown objective {name!r} (config.objectives.{name}); available: "
                    f"{available()}.")
  return module
