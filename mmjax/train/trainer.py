"""The training run, in named parts: `train_and_evaluate` checks the config and locks the
workdir; `setup` builds the mesh, data, evaluators, the model as shapes, the loop and the
checkpoint manager (nothing compiled); `restore_or_initialize` gives the state; `train` steps,
logs, saves and evaluates; `report` prints the results.

`train_and_evaluate(config, workdir)` is what `main.py`, the tests and notebooks call. The step
itself (mmjax.train.step) runs under jit on a data / fsdp / tensor mesh (config.parallel.loop
'jit', the default: `JitLoop`) or under pmap with replicated parameters ('pmap': `PmapLoop`);
both share the model, the losses and the step logic. The step builders and the two loop
objects are in loops.py; what the loop watches beside the step (non-finite guard, example log,
speed, profile) in monitors.py.
"""
import dataclasses
import typing

import jax
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from mmjax import evaluate
from mmjax import interop
from mmjax.data import loader
from mmjax.evaluate import retrieval
from mmjax.models import sizes
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import checkpoint
from mmjax.train import init_from
from mmjax.train import metrics as metrics_lib
from mmjax.train import mfu
from mmjax.train import optimizer
from mmjax.train import preemption
from mmjax.train import validate
from mmjax.train import workdir as workdir_lib
# The building blocks live by job in loops.py and monitors.py (tests monkeypatch with_rows and
# initial_state here, where the loop calls them). jit_train_step is also read from here by
# ../shared/bench/anchors.py, with abstract_model, initial_state and with_rows.
from mmjax.train.loops import (  # pylint: disable=unused-import
    JitLoop, PmapLoop, abstract_model, initial_state, jit_train_step, with_rows)
from mmjax.train.monitors import ExampleLog, NonFiniteGuard, Profile, SpeedLog


# ----------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config, workdir, *, requested_evals=()):
  """Trains (resuming from WORKDIR/checkpoints if there are any) and evaluates.

  Returns the last evaluation's metrics. The workdir is locked for the run (workdir.lock), and
  a resume must keep the run's config (workdir.check_resume). Evaluators that cannot run on
  the dataset are switched off with a notice, unless named in `requested_evals` (the ones the
  command line set): then that is an error.
  """
  config, workdir = validate.expand_paths(config, workdir)  # '~' and $VARS, before any use.
  validate.check_config(config)
  validate.check_workdir(workdir)
  with workdir_lib.lock(workdir):
    changed = workdir_lib.check_resume(workdir, config)
    return _train_and_evaluate(config, workdir, changed, requested_evals)


@dataclasses.dataclass
class Run:
  """What the loop works with, set up by `setup`."""
  config: typing.Any
  workdir: str
  info: loader.DatasetInfo
  batches: typing.Any  # This process's training batches, indexed by step - 1 (MapDataset).
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
    checkpoint.save(self.mngr, step, self.loop.global_state(state), force=force)

  def close(self):
    checkpoint.wait(self.mngr)
    self.mngr.close()
    self.writer.close()


def _train_and_evaluate(config, workdir, changed, requested_evals):
  run, abstract_state, state_shardings = setup(config, workdir, requested_evals)
  state = restore_or_initialize(run, abstract_state, state_shardings)
  # Recorded only now that it trains: a launch that failed in set-up or restore must not
  # become the one a resume is compared with.
  workdir_lib.record_launch(workdir, config, changed)
  start_step = int(state["step"])
  state, eval_metrics, preempted = train(run, run.loop.place(state), start_step)
  if preempted is not None:
    run.close()
    logging.warning("%s: saved a checkpoint at step %d. Run the same command to resume.",
                    *preempted)
    return {}
  if not eval_metrics and start_step >= config.total_steps:
    logging.info("Already trained to step %d; evaluating only.", start_step)
    eval_metrics = run.evaluate(start_step, state)
  run.close()
  report(config, workdir, eval_metrics, max(start_step, config.total_steps))
  return eval_metrics


def setup(config, workdir, requested_evals=()):
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
  batches = loader.train_batches(config.data, info, global_batch_size=config.batch_size,
                                 seed=config.seed)

  # Model and optimizer as shapes: nothing is allocated until it has a sharding. Optimizer
  # state follows the parameters (its moments carry the same logical names); pmap keeps whole
  # copies, so its checkpoints are replicated whatever the rules say.
  tx, lr_schedule = optimizer.make(config.optimizer, config.total_steps,
                                   depth=sizes.of(config.model).depth)
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
  run = Run(config=config, workdir=workdir, info=info, batches=batches, graphdef=graphdef,
            tx=tx, loop=loop, mngr=mngr, evaluators=evaluators,
            writer=metrics_lib.MetricWriter(workdir))
  return run, abstract_state, state_shardings


def restore_or_initialize(run, abstract_state, state_shardings):
  """The latest checkpoint's state, else a fresh state, with config.init_from's weights if it
  names a run. Global arrays in their shardings."""
  config, target = run.config, checkpoint.abstract_with_shardings(abstract_state, state_shardings)
  state = checkpoint.restore_latest(run.mngr, target)
  if state is not None:
    logging.info("Resumed from %s at step %d.", run.mngr.directory, int(state["step"]))
    return state
  imported = interop.split(config.init_from)[0] is not None
  init_dir = (init_from.step_dir(config.init_from) if config.init_from and not imported
              else None)
  if imported:  # The folder and its architecture first, before anything is initialized.
    interop.check(config.init_from, config.model, run.info)
  if init_dir:  # Shapes first: a mismatch fails before anything is initialized.
    init_from.match(init_from.flatten_shapes(abstract_state["params"]),
                   init_from.checkpoint_shapes(init_dir))
  state = initial_state(config, run.info, run.tx, state_shardings)
  if imported:
    state["params"], restored = init_from.restore_imported(
        config.init_from, target["params"], state["params"], config.model, run.info)
  elif init_dir:
    state["params"], restored = init_from.restore(init_dir, target["params"], state["params"])
  if config.init_from:
    logging.info("%s", init_from.summary(restored))
    if jax.process_index() == 0:
      print(init_from.summary(restored))
      init_from.write(restored, run.workdir)
  return state


def train(run, state, start_step):
  """Steps from start_step + 1 to config.total_steps: logs, checkpoints, evaluates, and stops
  early at a preemption notice (after saving). Returns (state, the last eval's metrics, the
  (why, step) it stopped at on a preemption notice or Ctrl-C, or None)."""
  config, loop = run.config, run.loop
  eval_metrics, in_flight, saved, preempted = {}, None, None, None
  progress = tqdm.tqdm(total=config.total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, disable=jax.process_index() != 0)
  guard = NonFiniteGuard(config.on_nonfinite, run.mngr.latest_step)
  # Step s trains on batch s - 1 of the stream: the position follows from the step alone.
  data_iter = iter(loader.batches_from(run.batches, config.data, start_step))
  example_log = ExampleLog(run.workdir, config.record_example_ids, start_step)
  speed, profile = SpeedLog(config, start_step), Profile(config, run.workdir)
  try:
    with preemption.Watcher() as watcher:  # SIGTERM, Ctrl-C: save at the next step, stop.
      for step in range(start_step + 1, config.total_steps + 1):
        host_batch = next(data_iter)
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
          preempted = (watcher.reason, step)
          break
  finally:
    # However the loop ends (done, preempted, an error): saves already started complete, so
    # no finished checkpoint is lost and none is left half written.
    profile.stop()
    progress.close()
    data_iter.close()  # Its reader threads or worker processes.
    example_log.close()
    checkpoint.wait(run.mngr)
  return state, eval_metrics, preempted


def report(config, workdir, eval_metrics, step):
  """Prints the final retrieval table and accuracies (process 0)."""
  if jax.process_index() != 0:
    return
  if any(k.startswith("eval/retrieval/") for k in eval_metrics):
    hit = ("the paired item itself" if config.evals.retrieval.get("hit") == "pair"
           else "an item of the same class")
    print(f"\nZero-shot retrieval on the {config.evals.retrieval.split} split, step {step} "
          f"(a hit is {hit}):")
    print(retrieval.table(eval_metrics))
  accuracies = {k: v for k, v in eval_metrics.items() if k.endswith("accuracy")}
  if accuracies:
    print(f"\nAccuracy at step {step}:")
    for k, v in accuracies.items():
      print(f"  {k[len('eval/'):]:<40} {v:.3f}")
  print(f"Metrics: {workdir}/metrics.jsonl; pictures: {workdir}/images/; "
        f"TensorBoard: {workdir}/tensorboard/")
