"""The training loop, top to bottom: checks, data, mesh, model and optimizer, sharding,
restore, step, evals, loop.

`train_and_evaluate(config, workdir)` is what `main.py`, the tests and notebooks call.
"""
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import logging
from flax import nnx

from mmjax import evaluate
from mmjax import objectives
from mmjax.data import loader
from mmjax.errors import NonFiniteError, UserError
from mmjax.evaluate import retrieval
from mmjax.models import mmt
from mmjax.parallel import mesh as mesh_lib
from mmjax.train import checkpoint
from mmjax.train import metrics as metrics_lib
from mmjax.train import optimizer
from mmjax.train import validate


# ----------------------------------------------------------------------------------------------
# Pure step functions (module level so tests can call them alone).


def mask_ratios(objectives_cfg, modalities):
  """{modality: mask ratio} for every switched-on masked-modeling objective."""
  ratios = {}
  for name, cfg in objectives_cfg.items():
    modality = objectives.modality(name)
    if modality in modalities and cfg.weight > 0:
      ratios[modality] = cfg.mask_ratio
  return ratios


def loss_fn(params, graphdef, batch, key, objectives_cfg, modalities):
  """Weighted sum of the switched-on objectives, and the metrics of each."""
  model = nnx.merge(graphdef, params)
  contrastive = objectives_cfg.contrastive
  out = model(batch, key=key, mask_ratios=mask_ratios(objectives_cfg, modalities),
              embeddings=contrastive.view if contrastive.weight > 0 else None)
  total, metrics = 0.0, {}
  for name, cfg in objectives_cfg.items():
    if cfg.weight == 0:
      continue
    loss, extra = objectives.get(name)(out, cfg)
    total += cfg.weight * loss
    metrics[f"train/loss/{name}"] = loss
    metrics.update({f"train/{name}/{k}": v for k, v in extra.items()})
  metrics["train/loss"] = total
  return total, metrics


def train_step(state, batch, *, graphdef, tx, lr_schedule, config, modalities):
  """One optimizer update. state = {step, params, opt_state}; returns (state, metrics)."""
  # Masking randomness comes from (seed, step) alone, so a resumed run draws the same masks.
  key = jax.random.fold_in(jax.random.key(config.seed), state["step"])
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, metrics), grads = grad_fn(state["params"], graphdef, batch, key, config.objectives,
                                modalities)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics["train/grad_norm"] = optax.global_norm(grads)
  metrics["train/lr"] = lr_schedule(state["step"])
  return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def init_state(config, info, tx):
  model = mmt.MultimodalTransformer(config.model, info, rngs=nnx.Rngs(config.seed))
  params = nnx.state(model, nnx.Param)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def _check_finite(step, scalars):
  for name, value in scalars.items():
    if not np.isfinite(value):
      raise NonFiniteError(f"Step {step}: {name} is {value}. Lower optimizer.lr, check the "
                           "data, or resume from the last checkpoint with other settings.")


# ----------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config, workdir):
  """Trains (resuming from WORKDIR/checkpoints if there are any) and evaluates.

  Returns the last evaluation's metrics.
  """
  # --- Checks: everything the user gave us, before anything is built or compiled.
  validate.check_config(config)
  validate.check_workdir(workdir)
  if config.init_from:
    raise UserError("config.init_from (fine-tuning from a checkpoint) is not supported by "
                    "pretraining configs yet.")

  # --- Mesh.
  mesh = mesh_lib.make_mesh(config.mesh)
  dp = mesh_lib.data_parallel_size(mesh)
  if config.batch_size % dp:
    raise UserError(f"config.batch_size={config.batch_size} must be divisible by the "
                    f"data-parallel size {dp} (mesh {dict(mesh.shape)}).")

  # --- Data (built on first use).
  info = loader.prepare(config.data)
  validate.check_modalities(config, info)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))
  train_loader = loader.train_loader(config.data, info, global_batch_size=config.batch_size,
                                     seed=config.seed)
  data_iter = iter(train_loader)

  # --- Model and optimizer, as shapes first: nothing is allocated until it has a sharding.
  tx, lr_schedule = optimizer.make(config.optimizer, config.total_steps)
  init = functools.partial(init_state, config, info, tx)
  # Shardings are applied by jit's out_shardings below, not eagerly at variable creation.
  with nnx.use_eager_sharding(False):
    abstract_state = jax.eval_shape(init)
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: mmt.MultimodalTransformer(config.model, info, rngs=nnx.Rngs(0))), nnx.Param)
  state_shardings = mesh_lib.param_shardings(abstract_state, mesh)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  logging.info("Model %s/%s: %.2fM parameters; mesh %s.", config.model.name, config.model.size,
               num_params / 1e6, dict(mesh.shape))

  # --- Restore or initialize.
  mngr = checkpoint.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
  state = checkpoint.restore_latest(
      mngr, checkpoint.abstract_with_shardings(abstract_state, state_shardings), data_iter)
  if state is None:
    with nnx.use_eager_sharding(False):
      state = jax.jit(init, out_shardings=state_shardings)()
  else:
    logging.info("Resumed from %s at step %d.", mngr.directory, int(state["step"]))
  start_step = int(state["step"])

  # --- Step.
  step_fn = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, lr_schedule=lr_schedule,
                        config=config, modalities=info.modalities),
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0)

  # --- Evals.
  evaluators = {name: evaluate.get(name, cfg, config=config, info=info, mesh=mesh)
                for name, cfg in config.evals.items()}
  writer = metrics_lib.MetricWriter(workdir)

  def run_evals(step):
    model = nnx.merge(graphdef, state["params"])
    results = {}
    for evaluator in evaluators.values():
      results.update(evaluator.run(model, step, writer))
    writer.write_scalars(step, results)
    return results

  # --- Loop.
  eval_metrics = {}
  progress = tqdm.tqdm(total=config.total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, disable=jax.process_index() != 0)
  last_time, last_step = time.perf_counter(), start_step
  in_flight = None
  for step in range(start_step + 1, config.total_steps + 1):
    batch = mesh_lib.host_to_global(next(data_iter), mesh)
    state, metrics = step_fn(state, batch)
    # Wait for the previous step only: one step stays in flight (the next batch loads while it
    # runs), and the progress bar's rate and ETA are real rather than dispatch speed.
    jax.block_until_ready(in_flight)
    in_flight = metrics
    progress.update()

    if step % config.log_every == 0 or step == config.total_steps:
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      _check_finite(step, scalars)
      now = time.perf_counter()
      scalars["train/examples_per_sec"] = (step - last_step) * config.batch_size / (now - last_time)
      last_time, last_step = now, step
      writer.write_scalars(step, scalars)
      progress.set_postfix({"loss": f"{scalars['train/loss']:.3f}",
                            "ex/s": f"{scalars['train/examples_per_sec']:.0f}"})

    if step % config.checkpoint_every == 0 or step == config.total_steps:
      checkpoint.save(mngr, step, state, data_iter, force=step == config.total_steps)

    if step % config.eval_every == 0 or step == config.total_steps:
      eval_metrics = run_evals(step)
      progress.write(f"step {step}: " + ", ".join(
          f"{k.split('/')[-2]} {k.split('/')[-1]}={v:.3f}"
          for k, v in eval_metrics.items() if k.endswith("r@1")))
      last_time = time.perf_counter()  # Evals are not training throughput.
  progress.close()

  if not eval_metrics and start_step >= config.total_steps:
    logging.info("Already trained to step %d; evaluating only.", start_step)
    eval_metrics = run_evals(start_step)
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  if jax.process_index() == 0 and any(k.startswith("eval/retrieval/") for k in eval_metrics):
    print(f"\nZero-shot retrieval on the {config.evals.retrieval.split} split, step "
          f"{max(start_step, config.total_steps)} (a hit is an item of the same class):")
    print(retrieval.table(eval_metrics))
    print(f"Metrics: {workdir}/metrics.jsonl; pictures: {workdir}/images/; "
          f"TensorBoard: {workdir}/tensorboard/")
  return eval_metrics
