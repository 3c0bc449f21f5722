"""The training step: one function, the same math however the batch is split.

  train_step(state, batch, ...) -> (state, metrics)

It runs under jit on global arrays sharded over a mesh (ctx.axis_name None), or inside pmap on
each device's rows (ctx.axis_name 'data'), with or without gradient accumulation over
micro-batches, and gives the same loss and update in every case (up to float rounding):

- Masks are drawn per example from (seed, step, the example's row in the global batch).
- Objectives return sums and counts (mmjax.objectives.Terms); a loss is divided by the count
  over the whole global batch, so every shard's share adds up to the global loss. Under pmap
  the gradients of the shares are summed over devices.
- Objectives that mix rows (contrastive negatives span the global batch; each objective
  declares it, mmjax.objectives) are computed on the whole batch. With accumulation (GradCache,
  Gao et al. 2021): a forward pass per micro-batch collects the model outputs those objectives
  read (their declared inputs) and the row-local counts; the row-mixing losses and their
  gradients w.r.t. those inputs are computed once on the whole batch; then each micro-batch's
  backward pass carries those input gradients along with its own row-local losses. The price
  is one extra forward pass per micro-batch. No objective is named here.
"""
import einops
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mmjax import objectives
from mmjax.train import mfu
from mmjax.train import optimizer

def mask_ratios(objectives_cfg, modalities):
  """{modality: mask ratio} for every switched-on masked-modeling objective."""
  ratios = {}
  for name, cfg in objectives_cfg.items():
    modality = objectives.modality(name)
    if modality in modalities and cfg.weight > 0:
      ratios[modality] = cfg.mask_ratio
  return ratios


def forward(params, graphdef, batch, key, config, modalities):
  """The model's outputs for the switched-on objectives. Frozen parameters (a linear probe:
  config.optimizer.freeze) are constants here, so the backward pass stops at the head instead
  of differentiating the whole encoder for gradients the optimizer would zero."""
  freeze = config.optimizer.get("freeze", "")
  if freeze:
    params = jax.tree.map(lambda p, label: p if label == "train" else jax.lax.stop_gradient(p),
                          params, optimizer.trainable_labels(params, freeze))
  model = nnx.merge(graphdef, params)
  out = model(batch, key=key, mask_ratios=mask_ratios(config.objectives, modalities),
              embeddings=objectives.embedding_view(config.objectives))
  passes = out.pop("passes", None)  # Models that report what they ran: counted here.
  if passes is not None:
    out["useful_flops"] = mfu.useful_flops(model, passes)
  return out


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


def _useful(forward_flops, ctx, config):
  """Useful FLOPs of the step over the global batch: the model's forward matmul FLOPs on real,
  visible tokens, times 3 for forward and backward (no recomputation counted), or 1 for a
  linear probe (the backward pass stops at the head); none for a model that does not count
  them."""
  if forward_flops is None:
    return {}
  passes = 1.0 if config.optimizer.get("freeze", "") else 3.0
  return {"train/useful_flops": passes * ctx.total(jnp.sum(forward_flops))}


def grads_whole_batch(params, batch, key, *, graphdef, config, modalities, ctx):
  """(gradient of this shard's loss share, metrics) from one pass over the batch."""
  names = objectives.active(config.objectives)

  def share(params):
    out = forward(params, graphdef, batch, key, config, modalities)
    terms = _terms(out, config, ctx, names)
    loss = sum(config.objectives[n].weight * t.sums["loss"][0] / _count(ctx, t.sums["loss"][1])
               for n, t in terms.items())
    return loss, (terms, out.get("useful_flops"))

  grads, (terms, useful_flops) = jax.grad(share, has_aux=True)(params)
  return grads, _metrics(terms, config, ctx) | _useful(useful_flops, ctx, config)


def _cross_inputs(names):
  """(row, shared, mask) model outputs that the row-mixing objectives `names` read."""
  row, shared, mask = set(), set(), set()
  for n in names:
    r, s, f = objectives.inputs(n)
    row, shared, mask = row | set(r), shared | set(s), mask | set(f)
  return sorted(row), sorted(shared), sorted(mask)


def grads_accumulated(params, batch, key, *, graphdef, config, modalities, ctx, steps):
  """Like grads_whole_batch, over `steps` micro-batches (GradCache for the objectives that mix
  rows).

  Micro-batch j holds rows j, j + steps, j + 2 * steps, ... so that every device keeps its own
  rows in each micro-batch.
  """
  split = lambda x: einops.rearrange(x, "(m k) ... -> k m ...", k=steps)
  join = lambda x: einops.rearrange(x, "k m ... -> (m k) ...")
  micro = jax.tree.map(split, batch)
  names = objectives.active(config.objectives)
  cross = [n for n in names if objectives.mixes_rows(n)]  # On the whole batch at once.
  local = [n for n in names if n not in cross]  # Row-local: per micro-batch.
  row_keys, shared_keys, mask_keys = _cross_inputs(cross)

  # Pass 1, forward only: the counts of the row-local terms and the row-mixing inputs.
  def collect(mb):
    out = forward(params, graphdef, mb, key, config, modalities)
    counts = {n: {k: d for k, (_, d) in t.sums.items()}
              for n, t in _terms(out, config, ctx, local).items()}
    inputs = {k: out[k] for k in row_keys + shared_keys}
    return counts, inputs, {k: out[k] for k in mask_keys}, out.get("useful_flops")

  counts, inputs, masks, useful_flops = jax.lax.map(collect, micro)
  counts = jax.tree.map(lambda c: c.sum(0), counts)

  # The row-mixing losses once over the whole batch, and their gradient w.r.t. their inputs.
  terms, input_grads = {}, {}
  if cross:
    inputs = ({k: jax.tree.map(join, inputs[k]) for k in row_keys}
              | {k: jax.tree.map(lambda s: s[0], inputs[k]) for k in shared_keys})
    masks = {k: jax.tree.map(join, v) for k, v in masks.items()}  # Not differentiated.

    def cross_share(inputs):
      t = {n: objectives.get(n)(inputs | masks, config.objectives[n], ctx) for n in cross}
      return sum(config.objectives[n].weight * t[n].sums["loss"][0]
                 / _count(ctx, t[n].sums["loss"][1]) for n in cross), t

    input_grads, cross_terms = jax.grad(cross_share, has_aux=True)(inputs)
    terms.update(cross_terms)
    for k in row_keys:
      input_grads[k] = jax.tree.map(split, input_grads[k])

  # Pass 2: each micro-batch's backward pass: its row-local losses (over the global counts)
  # plus <d loss / d input, input> for its rows' inputs and 1/steps of the shared ones'.
  def backward(grads, xs):
    mb, row_grads = xs

    def surrogate(params):
      out = forward(params, graphdef, mb, key, config, modalities)
      t = _terms(out, config, ctx, local)
      total = sum(config.objectives[n].weight * t[n].sums["loss"][0]
                  / _count(ctx, counts[n]["loss"]) for n in local)
      dot = lambda g, x: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g),
                                                             jax.tree.leaves(x)))
      for k in row_keys:
        total += dot(row_grads[k], out[k])
      for k in shared_keys:  # Used by every micro-batch: 1/steps each.
        total += dot(input_grads[k], out[k]) / steps
      return total, {n: {k: num for k, (num, _) in t[n].sums.items()} for n in local}

    g, sums = jax.grad(surrogate, has_aux=True)(params)
    return jax.tree.map(jnp.add, grads, g), sums

  row_grads = {k: input_grads[k] for k in row_keys}
  grads, sums = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (micro, row_grads))
  for n in local:
    terms[n] = objectives.Terms(
        sums={k: (sums[n][k].sum(0), counts[n][k]) for k in counts[n]}, values={})
  terms = {n: terms[n] for n in names}  # Config order, as without accumulation.
  return grads, _metrics(terms, config, ctx) | _useful(useful_flops, ctx, config)


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
