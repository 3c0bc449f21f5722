"""The device mesh (axes data, fsdp, tensor) and host-to-global batch helpers.

The batch is split over the mesh axes that the rule for the logical axis 'batch' names
(config.parallel.rules.batch, "data,fsdp" in every named strategy; see `batch_axes`);
parameters over fsdp and tensor as the other logical rules of mmjax.parallel.sharding say.
On multi-slice TPU or multi-node GPU systems the mesh is built so that the data axis spans
slices (nodes), keeping fsdp and tensor traffic on the fast links.
"""
import math

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mmjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")


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


def _granules(devices):
  """Groups of devices joined by fast links: TPU slices, or GPU hosts; 1 if all are one."""
  slices = {getattr(d, "slice_index", 0) for d in devices}
  if len(slices) > 1:
    return len(slices), False
  processes = {d.process_index for d in devices}
  if len(processes) > 1 and devices[0].platform == "gpu":
    return len(processes), True
  return 1, False


def device_grid(shape, devices):
  """Devices arranged in a grid of `shape` (data, fsdp, tensor). Across TPU slices or GPU nodes
  the data axis is split first over the slices (nodes), so fsdp and tensor groups stay within
  one and only data-parallel reductions cross the slow links (jax's hybrid mesh helper)."""
  granules, by_process = _granules(devices)
  if granules == 1:
    return None  # jax.make_mesh picks the best order for one slice.
  if shape[0] % granules:
    raise UserError(f"The mesh's data axis ({shape[0]}) must be a multiple of the {granules} "
                    "slices / nodes, so that only data-parallel gradient reductions cross the "
                    "slow links between them.")
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  ici = (shape[0] // granules,) + tuple(shape[1:])
  dcn = (granules,) + (1,) * (len(shape) - 1)
  return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=by_process)


def make_mesh(mesh_cfg, devices=None):
  """The one place meshes are made (see device_grid). Auto axes: recent JAX defaults to
  Explicit, which breaks GSPMD-style sharding annotations."""
  devices = jax.devices() if devices is None else devices
  shape = resolve_mesh_shape(mesh_cfg, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  grid = device_grid(shape, devices)
  if grid is not None:
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
  return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)


def batch_axes(rules_cfg):
  """The mesh axes the batch is split over, from `config.parallel.rules` (its 'batch' rule:
  "data,fsdp" -> ("data", "fsdp"); "" -> (), the batch replicated)."""
  value = rules_cfg.get("batch") if rules_cfg is not None else None
  if value is None:
    raise UserError("config.parallel.rules lacks 'batch': name the mesh axes the batch is "
                    "split over, e.g. 'data,fsdp'.")
  axes = tuple(a.strip() for a in str(value).split(",") if a.strip())
  bad = [a for a in axes if a not in MESH_AXES]
  if bad:
    raise UserError(f"config.parallel.rules.batch={value!r}: {bad} are not mesh axes "
                    f"{list(MESH_AXES)}.")
  return axes


def data_parallel_size(mesh, axes):
  """How many ways the batch is split: the product of the batch `axes`' sizes."""
  return math.prod(mesh.shape[a] for a in axes)


def eval_batch(size, mesh, rules):
  """(batch axes, batch size) for an evaluator's batches of `size` rows on `mesh` under the
  config's sharding `rules`: the size rounded up so that the batch splits evenly over the data
  axes (evaluators mark the filler rows invalid)."""
  axes = batch_axes(rules)
  dp = data_parallel_size(mesh, axes)
  return axes, -(-size // dp) * dp


def batch_sharding(mesh, axes):
  """Leading (batch) dimension split over the batch `axes` (see batch_axes), the rest
  replicated."""
  return NamedSharding(mesh, P(tuple(axes) or None))


def replicated(mesh):
  return NamedSharding(mesh, P())


# The 'batch' rule of every named strategy (mmjax.parallel.sharding.STRATEGIES).
STRATEGY_BATCH_AXES = ("data", "fsdp")


def host_to_global(batch, mesh, axes=STRATEGY_BATCH_AXES):
  """Makes global jax.Arrays from this process's slice of the batch (dict of numpy), split
  over the batch `axes`. Code with a config passes batch_axes(config.parallel.rules); the
  default serves scripts that build a step outside any config (e.g. benchmarks)."""
  sharding = batch_sharding(mesh, axes)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
