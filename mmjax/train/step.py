"""The training step: one function, the same math however the batch is split.

  train_step(state, batch, ...) -> (state, metrics)

It runs under jit on global arrays sharded over a mesh (ctx.axis_name None), or inside pmap on
each device's rows (ctx.axis_name 'data'), with or without gradient accumulation over
micro-batches, and gives the same loss and update in every case (up to float rounding):

- Masks are drawn per example from (seed, step, the example's row in the global batch).
- Objectives return sums and counts (mmjax.objectives.Terms); a loss is divided by the count
  over the whole global batch, so every shard's share adds up to the global loss. Under pmap
  the gradients of the shares are summed over devices.
- Contrastive negatives span the global batch. With accumulation (GradCache, Gao et al. 2021):
  a forward pass per micro-batch collects every embedding and the counts; the contrastive loss
  and its gradient w.r.t. the embeddings are computed once on the whole batch; then each
  micro-batch's backward pass carries those embedding gradients along with its own row-local
  losses. The price is one extra forward pass per micro-batch.
"""
import einops
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mmjax import objectives
from mmjax.train import optimizer

CONTRASTIVE = "contrastive"  # The one objective whose terms mix rows of the batch.


def mask_ratios(objectives_cfg, modalities):
  """{modality: mask ratio} for every switched-on masked-modeling objective."""
  ratios = {}
  for name, cfg in objectives_cfg.items():
    modality = objectives.modality(name)
    if modality in modalities and cfg.weight > 0:
      ratios[modality] = cfg.mask_ratio
  return ratios


def _active(config):
  return [name for name, cfg in config.objectives.items() if cfg.weight > 0]


def forward(params, graphdef, batch, key, config, modalities):
  """The model's outputs for the switched-on objectives."""
  model = nnx.merge(graphdef, params)
  contrastive = config.objectives.get(CONTRASTIVE)
  return model(batch, key=key, mask_ratios=mask_ratios(config.objectives, modalities),
               embeddings=contrastive.view if contrastive and contrastive.weight > 0 else None)


def _terms(out, config, ctx, names):
  terms = {}
  for n in names:
    with jax.named_scope(f"objective_{n}"):  # Names the ops in profiles.
      terms[n] = objectives.get(n)(out, config.objectives[n], ctx)
  return terms


def _count(ctx, count):
  """A count over the whole global batch (at least 1); never differentiated."""
  return jax.lax.stop_gradient(jnp.maximum(ctx.total(count), 1.0))


def _metrics(terms, config, ctx):
  """Global metrics from every objective's terms; 'train/loss' is the weighted total."""
  metrics, total = {}, 0.0
  for name, t in terms.items():
    for key, (num, den) in t.sums.items():
      metrics[f"train/loss/{name}" if key == "loss" else f"train/{name}/{key}"] = (
          ctx.total(num) / _count(ctx, den))
    metrics.update({f"train/{name}/{key}": v for key, v in t.values.items()})
    total += config.objectives[name].weight * metrics[f"train/loss/{name}"]
  metrics["train/loss"] = total
  return metrics


def _useful(forward_flops, ctx):
  """Useful FLOPs of the step over the global batch: the model's forward matmul FLOPs on real,
  visible tokens, times 3 for forward and backward (no recomputation counted); none for a
  model that does not count them."""
  if forward_flops is None:
    return {}
  return {"train/useful_flops": 3.0 * ctx.total(jnp.sum(forward_flops))}


def grads_whole_batch(params, batch, key, *, graphdef, config, modalities, ctx):
  """(gradient of this shard's loss share, metrics) from one pass over the batch."""
  names = _active(config)

  def share(params):
    out = forward(params, graphdef, batch, key, config, modalities)
    terms = _terms(out, config, ctx, names)
    loss = sum(config.objectives[n].weight * t.sums["loss"][0] / _count(ctx, t.sums["loss"][1])
               for n, t in terms.items())
    return loss, (terms, out.get("useful_flops"))

  grads, (terms, useful_flops) = jax.grad(share, has_aux=True)(params)
  return grads, _metrics(terms, config, ctx) | _useful(useful_flops, ctx)


def grads_accumulated(params, batch, key, *, graphdef, config, modalities, ctx, steps):
  """Like grads_whole_batch, over `steps` micro-batches (GradCache for the contrastive loss).

  Micro-batch j holds rows j, j + steps, j + 2 * steps, ... so that every device keeps its own
  rows in each micro-batch.
  """
  split = lambda x: einops.rearrange(x, "(m k) ... -> k m ...", k=steps)
  join = lambda x: einops.rearrange(x, "k m ... -> (m k) ...")
  micro = jax.tree.map(split, batch)
  names = _active(config)
  local = [n for n in names if n != CONTRASTIVE]  # Row-local objectives.
  contrastive = CONTRASTIVE in names

  # Pass 1, forward only: the counts of the row-local terms and the contrastive inputs.
  def first(mb):
    out = forward(params, graphdef, mb, key, config, modalities)
    counts = {n: {k: d for k, (_, d) in t.sums.items()}
              for n, t in _terms(out, config, ctx, local).items()}
    inputs = {k: out[k] for k in ("embeddings", "logit_scale", "logit_bias")} if contrastive else {}
    return counts, inputs, out.get("present", {}) if contrastive else {}, out.get("useful_flops")

  counts, inputs, present, useful_flops = jax.lax.map(first, micro)
  counts = jax.tree.map(lambda c: c.sum(0), counts)

  # The contrastive loss once over the whole batch, and its gradient w.r.t. its inputs.
  terms, input_grads = {}, {}
  if contrastive:
    inputs = {"embeddings": jax.tree.map(join, inputs["embeddings"]),
              "logit_scale": jax.tree.map(lambda s: s[0], inputs["logit_scale"]),
              "logit_bias": jax.tree.map(lambda s: s[0], inputs["logit_bias"])}
    cfg = config.objectives[CONTRASTIVE]

    present = jax.tree.map(join, present)  # Which rows have which modality: not differentiated.

    def contrastive_share(inputs):
      t = objectives.get(CONTRASTIVE)(inputs | {"present": present}, cfg, ctx)
      return cfg.weight * t.sums["loss"][0] / _count(ctx, t.sums["loss"][1]), t

    input_grads, terms[CONTRASTIVE] = jax.grad(contrastive_share, has_aux=True)(inputs)
    input_grads["embeddings"] = jax.tree.map(split, input_grads["embeddings"])

  # Pass 2: each micro-batch's backward pass: its row-local losses (over the global counts)
  # plus <d loss / d embedding, embedding> for its rows.
  def second(grads, xs):
    mb, embedding_grads = xs

    def surrogate(params):
      out = forward(params, graphdef, mb, key, config, modalities)
      t = _terms(out, config, ctx, local)
      total = sum(config.objectives[n].weight * t[n].sums["loss"][0]
                  / _count(ctx, counts[n]["loss"]) for n in local)
      if contrastive:
        for m, g in embedding_grads.items():
          total += jnp.vdot(g, out["embeddings"][m])
        for k in ("logit_scale", "logit_bias"):  # Used by every micro-batch: 1/steps each.
          for p, g in input_grads[k].items():
            total += jnp.vdot(g, out[k][p]) / steps
      return total, {n: {k: num for k, (num, _) in t[n].sums.items()} for n in local}

    g, sums = jax.grad(surrogate, has_aux=True)(params)
    return jax.tree.map(jnp.add, grads, g), sums

  embedding_grads = input_grads.get("embeddings", {})
  grads, sums = jax.lax.scan(second, jax.tree.map(jnp.zeros_like, params),
                             (micro, embedding_grads))
  for n in local:
    terms[n] = objectives.Terms(
        sums={k: (sums[n][k].sum(0), counts[n][k]) for k in counts[n]}, values={})
  return grads, _metrics(terms, config, ctx) | _useful(useful_flops, ctx)


def train_step(state, batch, *, graphdef, tx, lr_schedule, config, modalities,
               ctx=objectives.Context()):
  """One optimizer update. state = {step, params, opt_state, bad_examples}; returns
  (state, metrics).

  `batch` must carry 'row' int32[B], each example's position in the global batch, and may
  carry 'skipped' int32[B], bad examples the loader replaced (counted in bad_examples).
  Non-finite gradients leave params and opt_state as they were (optimizer.make); the metrics
  say so (train/nonfinite_streak, train/skipped_steps).
  """
  # Masking randomness comes from (seed, step, row) alone: a resumed run, another mesh or
  # another micro-batching draws the same masks.
  key = jax.random.fold_in(jax.random.key(config.seed), state["step"])
  kwargs = dict(graphdef=graphdef, config=config, modalities=modalities, ctx=ctx)
  steps = config.parallel.grad_accum_steps
  if steps == 1:
    grads, metrics = grads_whole_batch(state["params"], batch, key, **kwargs)
  else:
    grads, metrics = grads_accumulated(state["params"], batch, key, steps=steps, **kwargs)
  grads = ctx.total(grads)  # Under pmap: every device's share of the loss.
  with jax.named_scope("optimizer"):
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
  bad_examples = state["bad_examples"]
  if "skipped" in batch:
    bad_examples += ctx.total(jnp.sum(batch["skipped"], dtype=jnp.int32))
  metrics["train/grad_norm"] = optax.global_norm(grads)
  metrics["train/lr"] = lr_schedule(state["step"])
  metrics["train/nonfinite_streak"], metrics["train/skipped_steps"] = (
      optimizer.nonfinite_counts(opt_state))
  metrics["train/bad_examples_skipped"] = bad_examples
  return {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
          "bad_examples": bad_examples}, metrics
