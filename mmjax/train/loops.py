"""How the run calls its train step, as module-level building blocks (tests, scripts/plan.py
and the benchmarks use them alone): the model as shapes and a fresh state created in its
shards, the jitted step on a mesh and the pmapped one, each example's global row, and the two
loop objects the trainer drives, `JitLoop` and `PmapLoop` (with `PmapState`, pmap's layout of
the state). Both share the model, the losses and the step logic (mmjax.train.step).
"""
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmjax import models
from mmjax import objectives
from mmjax.objectives import Context
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import step as step_lib


def init_state(config, info, tx):
  model = models.make(config.model, info, rngs=nnx.Rngs(config.seed))
  params = nnx.state(model, nnx.Param)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
          "bad_examples": jnp.zeros((), jnp.int32)}


def abstract_model(config, info, tx):
  """(graphdef, abstract state): shapes and logical names only, nothing allocated."""
  # Shardings are applied by jit's out_shardings, not eagerly at variable creation.
  with nnx.use_eager_sharding(False):
    abstract_state = jax.eval_shape(functools.partial(init_state, config, info, tx))
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: models.make(config.model, info, rngs=nnx.Rngs(0))), nnx.Param)
  return graphdef, abstract_state


def initial_state(config, info, tx, state_shardings):
  """A fresh train state, created directly in its shards (never whole on one device)."""
  with nnx.use_eager_sharding(False):
    return jax.jit(functools.partial(init_state, config, info, tx),
                   out_shardings=state_shardings)()


def jit_train_step(config, info, mesh, tx, lr_schedule, graphdef, state_shardings):
  """The jitted train step on `mesh`: state sharded by the rules, batch over the mesh axes of
  the 'batch' rule. Trace and call it inside `sharding.use(mesh, rules)`."""
  needs_mesh = objectives.needs_mesh(config.objectives)
  batch_axes = mesh_lib.batch_axes(config.parallel.rules)
  return jax.jit(
      functools.partial(step_lib.train_step, graphdef=graphdef, tx=tx, lr_schedule=lr_schedule,
                        config=config, modalities=info.modalities,
                        ctx=Context(mesh=mesh if needs_mesh else None, batch_axes=batch_axes)),
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh, batch_axes)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0)


def pmap_train_step(config, info, tx, lr_schedule, graphdef):
  """The pmapped train step: state replicated on a leading device axis, batch
  [local devices, rows per device, ...], gradients summed over the 'data' axis."""
  return jax.pmap(
      functools.partial(step_lib.train_step, graphdef=graphdef, tx=tx, lr_schedule=lr_schedule,
                        config=config, modalities=info.modalities, ctx=Context(axis_name="data")),
      axis_name="data", donate_argnums=0)


def with_rows(batch, batch_size):
  """Adds 'row': each example's position in the global batch (this process's rows)."""
  local = len(next(iter(batch.values())))
  start = jax.process_index() * local
  if local * jax.process_count() != batch_size:
    raise ValueError(f"host batch of {local} rows x {jax.process_count()} processes is not "
                     f"the global batch of {batch_size}.")
  return batch | {"row": np.arange(start, start + local, dtype=np.int32)}


class PmapState:
  """Moves the train state between the pmap layout (a copy per local device on a leading axis)
  and global arrays on the mesh (checkpoints, evaluation).

  Both ways only regroup the per-device copies this process already holds: the global state is
  replicated (pmap is data parallel only), so each local device's shard is the whole value.
  Nothing crosses processes, and the same code serves one process or several.
  """

  def __init__(self, state_shardings):
    self.devices = jax.local_devices()  # pmap's own devices, in its order.
    self.n = len(self.devices)
    self.shardings = state_shardings
    local_mesh = jax.sharding.Mesh(np.asarray(self.devices), ("data",))
    self._local = jax.sharding.NamedSharding(local_mesh, jax.sharding.PartitionSpec())
    self._replicate = jax.jit(
        lambda s: jax.tree.map(lambda x: jnp.broadcast_to(x, (self.n,) + x.shape), s),
        out_shardings=jax.sharding.NamedSharding(local_mesh, jax.sharding.PartitionSpec("data")))

  def to_pmap(self, state):
    """Global replicated arrays -> [local devices, ...] arrays."""
    def local(x):
      if not x.sharding.is_fully_replicated:
        raise ValueError(f"PmapState needs replicated state, got sharding {x.sharding}.")
      copies = {s.device: s.data for s in x.addressable_shards}
      return jax.make_array_from_single_device_arrays(
          x.shape, self._local, [copies[d] for d in self.devices])
    return self._replicate(jax.tree.map(local, state))

  def to_global(self, state):
    """Each local device's own copy becomes its shard of a replicated global array."""
    def one(x, sharding):
      copies = {s.device: s.data for s in x.addressable_shards}
      shape = x.shape[1:]
      return jax.make_array_from_single_device_arrays(
          shape, sharding, [copies[d].reshape(shape) for d in sharding.addressable_devices])
    return jax.tree.map(one, state, self.shardings)

  def batch(self, batch):
    """This process's rows -> [local devices, rows per device, ...]."""
    return jax.tree.map(lambda x: x.reshape((self.n, -1) + x.shape[1:]), batch)



class JitLoop:
  """How the run calls its step under jit: global arrays sharded over the mesh by the rules."""

  def __init__(self, config, info, mesh, rules, tx, lr_schedule, graphdef, state_shardings):
    self.step = jit_train_step(config, info, mesh, tx, lr_schedule, graphdef, state_shardings)
    self.pmapped = False
    self._mesh, self._rules = mesh, rules
    self._batch_axes = mesh_lib.batch_axes(config.parallel.rules)

  def place(self, state):
    """The restored or initialized state (global arrays) as the step takes it."""
    return state

  def batch(self, host_batch):
    return mesh_lib.host_to_global(host_batch, self._mesh, self._batch_axes)

  def global_state(self, state):
    """The state as global arrays on the mesh (checkpoints, evaluation)."""
    return state

  def metrics(self, metrics):
    return metrics

  def context(self):
    return sharding.use(self._mesh, self._rules)


class PmapLoop:
  """How the run calls its step under pmap: a copy of the state per local device."""

  def __init__(self, config, info, tx, lr_schedule, graphdef, state_shardings):
    self.step = pmap_train_step(config, info, tx, lr_schedule, graphdef)
    self.pmapped = True
    self._layout = PmapState(state_shardings)

  def place(self, state):
    return self._layout.to_pmap(state)

  def batch(self, host_batch):
    return self._layout.batch(host_batch)

  def global_state(self, state):
    return self._layout.to_global(state)

  def metrics(self, metrics):
    return jax.tree.map(lambda x: x[0], metrics)  # The same on every device.

  def context(self):
    return contextlib.nullcontext()  # pmap maps devices itself: no mesh, no rules.
