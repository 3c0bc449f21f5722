"""Device mesh, logical-axis rules and host-to-global batch helpers.

The model names its axes logically (`batch`, `embed`, `mlp`, `heads`, `kv`, `vocab`, ...); the
config's rules say which mesh axis each goes to. Only `data` parallelism is used so far: every
parameter is replicated and the batch is split over `data` (and `fsdp`, which is 1 here).
"""
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mmjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or None: replicated). Strategies beyond data parallel will be
# small overlays on this table.
DATA_PARALLEL_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None), ("embed", None), ("mlp", None), ("heads", None), ("kv", None),
    ("vocab", None), ("patch", None),
)


def resolve_mesh_shape(mesh_cfg, num_devices):
  """Turns `{"data": -1, ...}` into sizes for MESH_AXES that multiply to num_devices."""
  unknown = set(mesh_cfg) - set(MESH_AXES)
  if unknown:
    raise UserError(f"config.mesh has unknown axes {sorted(unknown)}; use {list(MESH_AXES)}.")
  sizes = {a: int(mesh_cfg.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
    raise UserError(f"config.mesh={dict(mesh_cfg)}: sizes must be positive, with at most one -1.")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise UserError(f"config.mesh={dict(mesh_cfg)} does not divide the {num_devices} devices.")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise UserError(f"config.mesh={dict(mesh_cfg)} needs {math.prod(sizes.values())} devices, "
                    f"but {num_devices} are available.")
  return tuple(sizes[a] for a in MESH_AXES)


def make_mesh(mesh_cfg, devices=None):
  """The one place meshes are made. Auto axes: recent JAX defaults to Explicit, which breaks
  GSPMD-style sharding annotations."""
  devices = jax.devices() if devices is None else devices
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def data_parallel_size(mesh):
  return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh):
  """Leading (batch) dimension split over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh):
  return NamedSharding(mesh, P())


def param_shardings(abstract_params, mesh, rules=DATA_PARALLEL_RULES):
  """NamedShardings for a params State from the logical names on its variables."""
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(abstract_params)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, P))


def host_to_global(batch, mesh):
  """Makes global jax.Arrays from this process's slice of the batch (dict of numpy)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
