"""Logical axis rules: which mesh axes each logical name of the model is split over.

The model names the axes of its parameters ('embed', 'mlp', 'heads', 'kv', 'vocab', 'patch',
'layers') and of its activations ('batch', 'length', 'act_embed'). A config's
`parallel.rules` maps every name to mesh axes ("" replicated, "fsdp", "data,fsdp"). The named
strategies below are small overlays on the data-parallel table; configs pick one with
`strategy_rules(name)` and any rule can be overridden from the command line, e.g.
`--config.parallel.rules.mlp=tensor`.

  data_parallel  parameters replicated, batch split over data (and fsdp).
  fsdp           + every parameter split along its 'embed' axis over fsdp (ZeRO-3 / FSDP:
                 gathered layer by layer when used); optimizer state follows the parameters.
  fsdp_tensor    + Megatron-style tensor parallelism: MLP hidden units, attention heads and
                 the vocabulary split over tensor.
"""
import contextlib

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from flax.core import spmd
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax.errors import UserError
from mmjax.parallel import mesh as mesh_lib

LOGICAL_AXES = ("batch", "length", "act_embed", "embed", "mlp", "heads", "kv", "vocab",
                "patch", "layers")

_DATA_PARALLEL = {name: "" for name in LOGICAL_AXES} | {
    "batch": ",".join(mesh_lib.STRATEGY_BATCH_AXES)}
STRATEGIES = {
    "data_parallel": _DATA_PARALLEL,
    "fsdp": _DATA_PARALLEL | {"embed": "fsdp"},
    "fsdp_tensor": _DATA_PARALLEL | {"embed": "fsdp", "mlp": "tensor", "heads": "tensor",
                                     "vocab": "tensor"},
}


def strategy_rules(name):
  """The rules of a named strategy, as a ConfigDict for `config.parallel.rules`."""
  if name not in STRATEGIES:
    raise UserError(f"Unknown sharding strategy {name!r}: use one of {list(STRATEGIES)}.")
  return ml_collections.ConfigDict(dict(STRATEGIES[name]))


def rules_from_config(rules_cfg):
  """`config.parallel.rules` -> flax logical axis rules ((name, mesh axes or None), ...)."""
  missing = [n for n in LOGICAL_AXES if n not in rules_cfg]
  if missing:
    raise UserError(f"config.parallel.rules lacks {missing}; every logical axis needs a rule "
                    f"('' for replicated).")
  rules = []
  for name, value in rules_cfg.items():
    axes = tuple(a.strip() for a in str(value).split(",") if a.strip())
    bad = [a for a in axes if a not in mesh_lib.MESH_AXES]
    if bad:
      raise UserError(f"config.parallel.rules.{name}={value!r}: {bad} are not mesh axes "
                      f"{list(mesh_lib.MESH_AXES)}.")
    rules.append((name, axes if len(axes) > 1 else (axes[0] if axes else None)))
  return tuple(rules)


@contextlib.contextmanager
def use(mesh, rules):
  """Activates `mesh` and logical `rules` for tracing: `constrain` and jit see them."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield


def constrain(x, names):
  """Sharding constraint on an activation by logical names; a no-op without active rules and
  mesh (model code runs unchanged outside the trainer, e.g. under pmap or in tests)."""
  rules = spmd.get_logical_axis_rules()
  mesh = jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty or any(t == jax.sharding.AxisType.Manual for t in mesh.axis_types):
    return x
  return jax.lax.with_sharding_constraint(x, spmd.apply_rules(P(*names), ()))


def _fit(spec, shape, mesh, path):
  """Drops mesh axes from the dimensions they do not divide (replicating those dimensions)."""
  dims = list(spec) + [None] * (len(shape) - len(spec))
  for i, axes in enumerate(dims):
    if axes is None:
      continue
    size = int(np.prod([mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
    if shape[i] % size:
      logging.info("%s: dimension %d (%d) is not divisible by mesh axes %s (%d); replicated.",
                   path, i, shape[i], axes, size)
      dims[i] = None
  return P(*dims)


def _uses(spec, axis):
  return any(axis == a or (isinstance(a, tuple) and axis in a) for a in spec)


def _fsdp_largest(spec, shape, names, mesh):
  """Splits the largest free dimension that fsdp divides (never a stacked 'layers' axis)."""
  dims = list(spec) + [None] * (len(shape) - len(spec))
  names = list(names or ()) + [None] * (len(shape) - len(names or ()))
  free = [i for i in range(len(shape)) if dims[i] is None and names[i] != "layers"
          and shape[i] % mesh.shape["fsdp"] == 0]
  if free:
    dims[max(free, key=lambda i: shape[i])] = "fsdp"
  return P(*dims)


def param_shardings(abstract_state, mesh, rules, fsdp_min_size=1024):
  """NamedShardings for a State (or a tree holding States) from its variables' logical names.

  Leaves without names (step counters, scalars) are replicated; a dimension that the named mesh
  axes do not divide is replicated rather than failing. When the rules split parameters over
  fsdp, a parameter of at least `fsdp_min_size` elements that they leave whole on fsdp (e.g. an
  attention bias, which has no 'embed' axis) gets its largest divisible dimension split over
  fsdp, so every large parameter and its optimizer state are split.
  """
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(abstract_state)
  names = nnx.get_partition_spec(abstract_state)  # The logical names themselves.
  fsdp_params = mesh.shape["fsdp"] > 1 and any(
      name != "batch" and axes is not None and "fsdp" in (axes if isinstance(axes, tuple)
                                                         else (axes,))
      for name, axes in rules)

  def leaf(path, spec, logical, x):
    if not hasattr(x, "shape"):  # Not an array (optax.MaskedNode of a frozen parameter).
      return x
    spec = _fit(spec, x.shape, mesh, jax.tree_util.keystr(path))
    if fsdp_params and x.size >= fsdp_min_size and not _uses(spec, "fsdp"):
      spec = _fsdp_largest(spec, x.shape, logical, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(leaf, specs, names, abstract_state,
                                          is_leaf=lambda x: isinstance(x, P))
