"""The training run, in named parts: `train_and_evaluate` checks the config and locks the
workdir; `setup` builds the mesh, data, evaluators, the model as shapes, the loop and the
checkpoint manager (nothing compiled); `restore_or_initialize` gives the state; `train` steps,
logs, saves and evaluates; `report` prints the results.

`train_and_evaluate(config, workdir)` is what `main.py`, the tests and notebooks call. The step
itself (mmjax.train.step) runs under jit on a data / fsdp / tensor mesh (config.parallel.loop
'jit', the default: `JitLoop`) or under pmap with replicated parameters ('pmap': `PmapLoop`);
both share the model, the losses and the step logic.
"""
import contextlib
import dataclasses
import functools
import json
import os
import time
import typing

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from mmjax import evaluate
from mmjax.data import loader
from mmjax.errors import NonFiniteError
from mmjax.evaluate import retrieval
from mmjax import models
from mmjax.models import sizes
from mmjax import objectives
from mmjax.objectives import Context
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import checkpoint
from mmjax.train import init_from
from mmjax.train import metrics as metrics_lib
from mmjax.train import mfu
from mmjax.train import optimizer
from mmjax.train import preemption
from mmjax.train import step as step_lib
from mmjax.train import validate
from mmjax.train import workdir as workdir_lib


# ----------------------------------------------------------------------------------------------
# Building blocks (module level: tests and scripts/plan.py use them alone).

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


# Metrics of wall-clock speed: they differ between runs of the same config and seed.
SPEED_METRICS = ("train/examples_per_sec", "train/step_seconds", "train/tflops_per_device",
                 "train/mfu", "train/useful_tflops_per_device", "train/mfu_useful")
NONFINITE_POLICIES = ("stop", "skip")
MAX_SKIPS_IN_A_ROW = 20  # on_nonfinite='skip' stops after this many non-finite steps in a row.


class NonFiniteGuard:
  """Applies config.on_nonfinite to each step's metrics, once the step has finished.

  The step itself never applies a non-finite update (optimizer.make), so the state stays
  usable: 'stop' raises NonFiniteError naming the step and the first non-finite metric;
  'skip' logs it and carries on (train/skipped_steps counts them), unless
  MAX_SKIPS_IN_A_ROW steps in a row are non-finite.
  """

  def __init__(self, policy, last_checkpoint):
    self.policy, self._last_checkpoint, self._checked = policy, last_checkpoint, 0

  def check(self, step, metrics):
    """`metrics`: step `step`'s metrics (device arrays of a finished step, or host floats)."""
    if step <= self._checked:
      return
    self._checked = step
    streak = int(jax.device_get(metrics["train/nonfinite_streak"]))
    if not streak:
      return
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # Name the most specific culprit: an objective's loss before the total, then the gradients.
    order = sorted(scalars, key=lambda k: (not k.startswith("train/loss/"), k != "train/loss", k))
    name = next((k for k in order if not np.isfinite(scalars[k])), "train/grad_norm")
    what = f"Step {step}: {name} is {scalars[name]}"
    if self.policy == "skip" and streak < MAX_SKIPS_IN_A_ROW:
      logging.warning("%s; the update was skipped (%d skipped steps so far).", what,
                      int(scalars["train/skipped_steps"]))
      return
    last = self._last_checkpoint()
    why = (f"{streak} steps in a row were non-finite" if self.policy == "skip" else
           "config.on_nonfinite='stop'")
    raise NonFiniteError(
        f"{what}. The update was not applied and the run stopped ({why}); "
        + (f"the last checkpoint is at step {last}. " if last is not None else
           "there is no checkpoint yet. ")
        + "Lower optimizer.lr, check the data, or set --config.on_nonfinite=skip to skip "
        "non-finite steps and count them.")


class ExampleLog:
  """WORKDIR/example_ids.jsonl: each step's global batch as split indices (config.
  record_example_ids), to audit the data order, e.g. across a resume."""

  def __init__(self, workdir, enabled):
    self._file = None
    if enabled and jax.process_index() == 0:
      self._file = open(os.path.join(workdir, "example_ids.jsonl"), "a", encoding="utf-8")
    self._enabled = enabled

  def write(self, step, index):
    if not self._enabled:
      return
    if jax.process_count() > 1:
      index = multihost_utils.process_allgather(index, tiled=True)
    if self._file:
      self._file.write(json.dumps({"step": step, "index": np.asarray(index).tolist()}) + "\n")
      self._file.flush()

  def close(self):
    if self._file:
      self._file.close()


# ----------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config, workdir, *, requested_evals=()):
  """Trains (resuming from WORKDIR/checkpoints if there are any) and evaluates.

  Returns the last evaluation's metrics. The workdir is locked for the run (workdir.lock), and
  a resume must keep the run's config (workdir.check_resume). Evaluators that cannot run on
  the dataset are switched off with a notice, unless named in `requested_evals` (the ones the
  command line set): then that is an error.
  """
  validate.check_config(config)
  validate.check_workdir(workdir)
  with workdir_lib.lock(workdir):
    changed = workdir_lib.check_resume(workdir, config)
    return _train_and_evaluate(config, workdir, changed, requested_evals)


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


class SpeedLog:
  """Wall-clock speed between log steps (compile and evals left out): step time, examples/s,
  TFLOP/s and MFU (executed matmul FLOPs per device per second / the device's peak, mfu.py)."""

  def __init__(self, config, start_step):
    self._batch_size = config.batch_size
    self._peak, source = mfu.peak_flops_per_device(config.model.dtype)
    logging.info("MFU against %s.", source)
    self.flops_per_device = None  # From the traced step, at the first step.
    self._time, self._step = time.perf_counter(), start_step

  def restart(self, step=None):
    """Counts from now (after a compile or an eval)."""
    self._time = time.perf_counter()
    self._step = self._step if step is None else step

  def add(self, step, scalars):
    """Adds the speed metrics to `scalars` (host floats); returns the progress bar's postfix."""
    now = time.perf_counter()
    seconds = (now - self._time) / (step - self._step)
    self._time, self._step = now, step
    scalars["train/step_seconds"] = seconds
    scalars["train/examples_per_sec"] = self._batch_size / seconds
    scalars["train/tflops_per_device"] = self.flops_per_device / seconds / 1e12
    postfix = {"loss": f"{scalars['train/loss']:.3f}",
               "ex/s": f"{scalars['train/examples_per_sec']:.0f}"}
    useful = scalars.pop("train/useful_flops", None)  # This step's, global.
    if useful is not None:
      useful /= jax.device_count()
      scalars["train/useful_tflops_per_device"] = useful / seconds / 1e12
    if self._peak:
      scalars["train/mfu"] = self.flops_per_device / seconds / self._peak
      postfix["mfu"] = f"{scalars['train/mfu']:.2f}"
      if useful is not None:
        scalars["train/mfu_useful"] = useful / seconds / self._peak
    return postfix


class Profile:
  """A JAX profiler trace of steps config.profile.steps ('START:END') into
  WORKDIR/tensorboard."""

  def __init__(self, config, workdir):
    self._steps = validate.profile_steps(config)
    self._dir = os.path.join(workdir, "tensorboard")
    self._on = False

  def before(self, step):
    if self._steps and step == self._steps[0] and jax.process_index() == 0:
      jax.profiler.start_trace(self._dir)
      self._on = True

  def after(self, step, metrics):
    if self._on and step == self._steps[1]:
      jax.block_until_ready(metrics)
      self.stop()
      logging.info("Profile of steps %d-%d: %s/plugins/profile/ (TensorBoard's profile tab, or "
                   "the .trace.json.gz in Perfetto).", *self._steps, self._dir)

  def stop(self):
    if self._on:
      jax.profiler.stop_trace()
      self._on = False


@dataclasses.dataclass
class Run:
  """What the loop works with, set up by `setup`."""
  config: typing.Any
  workdir: str
  info: loader.DatasetInfo
  data_iter: typing.Any
  graphdef: typing.Any
  tx: typing.Any  # The optax optimizer.
  loop: typing.Any  # JitLoop or PmapLoop.
  mngr: typing.Any  # The Orbax CheckpointManager.
  evaluators: dict
  writer: metrics_lib.MetricWriter

  def every(self, step, interval):
    return step % interval == 0 or step == self.config.total_steps

  def evaluate(self, step, state):
    model = nnx.merge(self.graphdef, self.loop.global_state(state)["params"])
    results = {}
    for evaluator in self.evaluators.values():
      results.update(evaluator.run(model, step, self.writer))
    self.writer.write_scalars(step, results)
    return results

  def save(self, step, state, force=False):
    checkpoint.save(self.mngr, step, self.loop.global_state(state), self.data_iter, force=force)

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()
    self.writer.close()


def _train_and_evaluate(config, workdir, changed, requested_evals):
  run, abstract_state, state_shardings = setup(config, workdir, changed, requested_evals)
  state = restore_or_initialize(run, abstract_state, state_shardings)
  start_step = int(state["step"])
  state, eval_metrics, preempted = train(run, run.loop.place(state), start_step)
  if preempted is not None:
    run.close()
    logging.warning("Preempted (SIGTERM): saved a checkpoint at step %d. Run the same command "
                    "to resume.", preempted)
    return {}
  if not eval_metrics and start_step >= config.total_steps:
    logging.info("Already trained to step %d; evaluating only.", start_step)
    eval_metrics = run.evaluate(start_step, state)
  run.close()
  report(config, workdir, eval_metrics, max(start_step, config.total_steps))
  return eval_metrics


def setup(config, workdir, changed=None, requested_evals=()):
  """Mesh, data, evaluators, the model and optimizer as shapes, the loop and the checkpoint
  manager: everything checked and nothing compiled or allocated. Returns (Run, abstract
  state, state shardings)."""
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.parallel.rules)
  validate.check_parallel(config, mesh)

  # Data: built on first use, by process 0 alone while the others wait.
  barrier = lambda: multihost_utils.sync_global_devices("mmjax: dataset prepared")
  if jax.process_index() > 0:
    barrier()
  info = loader.prepare(config.data)
  if jax.process_index() == 0 and jax.process_count() > 1:
    barrier()
  validate.check_modalities(config, info)
  evaluators = evaluate.build(config, info, mesh, requested=requested_evals)
  workdir_lib.record_launch(workdir, config, changed)
  data_iter = iter(loader.train_loader(config.data, info, global_batch_size=config.batch_size,
                                       seed=config.seed))

  # Model and optimizer as shapes: nothing is allocated until it has a sharding. Optimizer
  # state follows the parameters (its moments carry the same logical names); pmap keeps whole
  # copies, so its checkpoints are replicated whatever the rules say.
  tx, lr_schedule = optimizer.make(config.optimizer, config.total_steps,
                                   depth=sizes.get(config.model.size).depth)
  graphdef, abstract_state = abstract_model(config, info, tx)
  if config.parallel.loop == "pmap":
    rules = sharding.rules_from_config(sharding.strategy_rules("data_parallel"))
  state_shardings = sharding.param_shardings(abstract_state, mesh, rules)
  validate.check_memory(config, info, mesh, abstract_state, state_shardings)  # Will it fit?
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s/%s: %.2fM parameters; %s loop on mesh %s.", config.model.name,
               config.model.size, num_params / 1e6, config.parallel.loop, dict(mesh.shape))

  if config.parallel.loop == "pmap":
    loop = PmapLoop(config, info, tx, lr_schedule, graphdef, state_shardings)
  else:
    loop = JitLoop(config, info, mesh, rules, tx, lr_schedule, graphdef, state_shardings)
  mngr = checkpoint.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
  run = Run(config=config, workdir=workdir, info=info, data_iter=data_iter, graphdef=graphdef,
            tx=tx, loop=loop, mngr=mngr, evaluators=evaluators,
            writer=metrics_lib.MetricWriter(workdir))
  return run, abstract_state, state_shardings


def restore_or_initialize(run, abstract_state, state_shardings):
  """The latest checkpoint's state (and data position), else a fresh state, with
  config.init_from's weights if it names a run. Global arrays in their shardings."""
  config, target = run.config, checkpoint.abstract_with_shardings(abstract_state, state_shardings)
  state = checkpoint.restore_latest(run.mngr, target, run.data_iter)
  if state is not None:
    logging.info("Resumed from %s at step %d.", run.mngr.directory, int(state["step"]))
    return state
  init_dir = init_from.step_dir(config.init_from) if config.init_from else None
  if init_dir:  # Shapes first: a mismatch fails before anything is initialized.
    init_from.match(init_from.flatten_shapes(abstract_state["params"]),
                   init_from.checkpoint_shapes(init_dir))
  state = initial_state(config, run.info, run.tx, state_shardings)
  if init_dir:
    state["params"], restored = init_from.restore(init_dir, target["params"], state["params"])
    logging.info("%s", init_from.summary(restored))
    if jax.process_index() == 0:
      print(init_from.summary(restored))
      init_from.write(restored, run.workdir)
  return state


def train(run, state, start_step):
  """Steps from start_step + 1 to config.total_steps: logs, checkpoints, evaluates, and stops
  early at a preemption notice (after saving). Returns (state, the last eval's metrics, the
  step it was preempted at or None)."""
  config, loop = run.config, run.loop
  eval_metrics, in_flight, saved, preempted = {}, None, None, None
  progress = tqdm.tqdm(total=config.total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, disable=jax.process_index() != 0)
  guard = NonFiniteGuard(config.on_nonfinite, run.mngr.latest_step)
  example_log = ExampleLog(run.workdir, config.record_example_ids)
  speed, profile = SpeedLog(config, start_step), Profile(config, run.workdir)
  try:
    with preemption.Watcher() as watcher:  # SIGTERM: save at the next step and stop.
      for step in range(start_step + 1, config.total_steps + 1):
        host_batch = next(run.data_iter)
        example_log.write(step, host_batch["index"])
        batch = loop.batch(with_rows(host_batch, config.batch_size))
        with loop.context():
          if speed.flops_per_device is None:
            speed.flops_per_device = mfu.step_flops_per_device(loop.step, state, batch,
                                                               pmapped=loop.pmapped)
          profile.before(step)
          state, metrics = loop.step(state, batch)
        profile.after(step, metrics)
        # Wait for the previous step only: one step stays in flight (the next batch loads while
        # it runs), and the progress bar's rate and ETA are real rather than dispatch speed.
        if in_flight is not None:
          jax.block_until_ready(in_flight[1])
          guard.check(*in_flight)
        in_flight = (step, loop.metrics(metrics))
        progress.update()

        if run.every(step, config.log_every):
          guard.check(*in_flight)
          scalars = {k: float(v) for k, v in jax.device_get(in_flight[1]).items()}
          progress.set_postfix(speed.add(step, scalars))
          run.writer.write_scalars(step, scalars)
        elif step == start_step + 1:  # Compiled and run: later rates leave the compile out.
          jax.block_until_ready(metrics)
          speed.restart(step)

        if run.every(step, config.checkpoint_every):
          run.save(step, state, force=step == config.total_steps)
          saved = step

        if run.every(step, config.eval_every):
          eval_metrics = run.evaluate(step, state)
          if jax.process_index() == 0:  # tqdm.write ignores `disable`.
            progress.write(f"step {step}: " + ", ".join(
                f"{k.split('/')[-2]} {k.split('/')[-1]}={v:.3f}"
                for k, v in eval_metrics.items() if k.endswith(("r@1", "accuracy"))))
          speed.restart()  # Evals are not training throughput.

        if step < config.total_steps and watcher.reached(step):
          if saved != step:
            run.save(step, state, force=True)
          preempted = step
          break
  finally:
    # However the loop ends (done, preempted, an error): saves already started complete, so
    # no finished checkpoint is lost and none is left half written.
    profile.stop()
    progress.close()
    example_log.close()
    run.mngr.wait_until_finished()
  return state, eval_metrics, preempted


def report(config, workdir, eval_metrics, step):
  """Prints the final retrieval table and accuracies (process 0)."""
  if jax.process_index() != 0:
    return
  if any(k.startswith("eval/retrieval/") for k in eval_metrics):
    print(f"\nZero-shot retrieval on the {config.evals.retrieval.split} split, step {step} "
          "(a hit is an item of the same class):")
    print(retrieval.table(eval_metrics))
  accuracies = {k: v for k, v in eval_metrics.items() if k.endswith("accuracy")}
  if accuracies:
    print(f"\nAccuracy at step {step}:")
    for k, v in accuracies.items():
      print(f"  {k[len('eval/'):]:<40} {v:.3f}")
  print(f"Metrics: {workdir}/metrics.jsonl; pictures: {workdir}/images/; "
        f"TensorBoard: {workdir}/tensorboard/")
