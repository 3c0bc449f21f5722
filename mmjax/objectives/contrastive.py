"""Contrastive alignment of every pair of modalities: InfoNCE (CLIP) or sigmoid (SigLIP).

cfg: weight, type ('infonce' | 'siglip'), view ('clean' | 'masked', used by the trainer to ask
the model for embeddings), impl ('dense' | 'chunked'). `loss` is unweighted; the trainer
applies cfg.weight.

Negatives span the global batch. impl='dense' builds the similarities of this shard's rows
against every row of the batch (under jit XLA gathers what it needs; under pmap the other
side is all-gathered): memory grows with the global batch squared. impl='chunked'
(mmjax.objectives.chunked_contrastive) passes embeddings around the data axes in chunks and
never holds more than one chunk-by-chunk block, so per-device memory stays flat as devices are
added.
"""
import jax
import jax.numpy as jnp
import optax
from jax import lax

from mmjax import objectives
from mmjax.errors import UserError
from mmjax.objectives import chunked_contrastive
from mmjax.objectives import similarity

# What the trainer needs to know (mmjax.objectives): every row is compared with every other
# row of the global batch, from the pooled embeddings and the learned scale and bias of each
# pair, for the rows that have each modality.
MIXES_ROWS = True
ROW_INPUTS = ("embeddings",)
SHARED_INPUTS = ("logit_scale", "logit_bias")
MASK_INPUTS = ("present",)


def embedding_view(cfg):
  return cfg.view


def needs_mesh(cfg):
  return cfg.get("impl", "dense") == "chunked"


def _all_rows(z, axis_name):
  """The whole batch's rows: this shard's z itself under jit, gathered in a mapped context."""
  return z if axis_name is None else lax.all_gather(z, axis_name, tiled=True)


def _first_row(b, axis_name):
  """Global index of this shard's first row."""
  return 0 if axis_name is None else lax.axis_index(axis_name) * b


def infonce_sum(z_a, z_b, scale, axis_name=None, valid=None):
  """This shard's part of the summed CLIP loss: 0.5 * (cross-entropy of each of its rows of
  z_a against all of z_b + of each of its rows of z_b against all of z_a). valid bool[b]: the
  rows that are pairs (None: all); the others are neither queries nor candidates."""
  b = z_a.shape[0]
  w = similarity.weights(valid, b)
  mask = similarity.logit_mask(_all_rows(w, axis_name))[None, :]
  labels = _first_row(b, axis_name) + jnp.arange(b)
  rows = scale * similarity.similarities(z_a, _all_rows(z_b, axis_name)) + mask
  cols = scale * similarity.similarities(z_b, _all_rows(z_a, axis_name)) + mask
  return 0.5 * (w * (optax.softmax_cross_entropy_with_integer_labels(rows, labels)
                     + optax.softmax_cross_entropy_with_integer_labels(cols, labels))).sum()


def siglip_sum(z_a, z_b, scale, bias, axis_name=None, valid=None):
  """This shard's part of the summed SigLIP loss: -log sigmoid(label * (scale * sim + bias))
  over its rows of z_a against every row of z_b (label +1 for the pair, -1 otherwise). valid
  bool[b]: the rows that are pairs (None: all); a term counts when its row and column are."""
  b = z_a.shape[0]
  w = similarity.weights(valid, b)
  logits = scale * similarity.similarities(z_a, _all_rows(z_b, axis_name)) + bias
  rows = _first_row(b, axis_name) + jnp.arange(b)
  labels = jnp.where(rows[:, None] == jnp.arange(logits.shape[1])[None, :], 1.0, -1.0)
  both = w[:, None] * _all_rows(w, axis_name)[None, :]
  return -(both * jax.nn.log_sigmoid(labels * logits)).sum()


def infonce(z_a, z_b, scale):
  """CLIP loss for L2-normalized f32[B, E] pairs: symmetric softmax cross-entropy over the
  in-batch similarities times scale, row i's positive being column i."""
  return infonce_sum(z_a, z_b, scale) / z_a.shape[0]


def siglip(z_a, z_b, scale, bias):
  """SigLIP loss: -sum over all B*B pairs of log sigmoid(label * (scale * sim + bias)), label +1
  on the diagonal and -1 elsewhere, divided by the batch size."""
  return siglip_sum(z_a, z_b, scale, bias) / z_a.shape[0]


def check_config(cfg):
  """Raises UserError naming the key for a bad `config.objectives.contrastive`."""
  for key, allowed in (("type", ("infonce", "siglip")), ("view", ("clean", "masked")),
                       ("impl", ("dense", "chunked"))):
    value = cfg.get(key, "dense" if key == "impl" else None)  # impl is optional.
    if value not in allowed:
      raise UserError(f"config.objectives.contrastive.{key}={value!r}: use one of "
                      f"{list(allowed)}.")


def pair_sum(cfg, ctx, z_a, z_b, scale, bias, valid=None):
  """This shard's summed loss for one pair of modalities (see the module docstring); valid
  bool[b] marks the rows that have both (None: all)."""
  if cfg.get("impl", "dense") == "dense":
    if cfg.type == "infonce":
      return infonce_sum(z_a, z_b, scale, ctx.axis_name, valid)
    return siglip_sum(z_a, z_b, scale, bias, ctx.axis_name, valid)
  if ctx.axis_name is not None:  # Already mapped (pmap): pass chunks around that axis.
    if cfg.type == "infonce":
      return chunked_contrastive.infonce_share(z_a, z_b, scale, ctx.axis_name, valid)
    return chunked_contrastive.siglip_share(z_a, z_b, scale, bias, ctx.axis_name, valid)
  if ctx.mesh is None:
    raise UserError("objectives.contrastive.impl='chunked' needs a device mesh.")
  # Under jit on global arrays: shard_map over the data axes inside.
  return chunked_contrastive.sharded_sum(cfg.type, z_a, z_b, scale, bias, ctx.mesh,
                                         batch_axes=ctx.batch_axes, valid=valid)


def loss(outputs, cfg, ctx=objectives.Context()):
  """Terms: 'loss' is the mean over every (example, pair of modalities) where the example has
  both (the mean over pairs when every example has every modality); per pair (e.g.
  'image_text') its loss, and its logit scale (and SigLIP bias) as values.

  outputs['present'] {modality: bool[B]} (optional; default all True) says which examples have
  which modality: a pair's loss only uses the examples that have both sides, as queries and as
  candidates.
  """
  z = outputs.get("embeddings")
  if not z:
    raise UserError("The contrastive objective needs embeddings: call the model with "
                    "embeddings='clean' or 'masked'.")
  check_config(cfg)
  # A pair name is 'a_b' and modality names have no '_' (mmjax.modality.register refuses
  # them), so splitting it gives back its two modalities.
  pairs = [p for p in outputs["logit_scale"] if all(m in z for m in p.split("_"))]
  if not pairs:
    raise UserError(f"The contrastive objective needs two modalities, got {list(z)}.")
  present = outputs.get("present") or {}
  sums, values = {}, {}
  for pair in pairs:
    a, b = pair.split("_")
    valid = _both(present.get(a), present.get(b))
    count = (jnp.asarray(z[a].shape[0], jnp.float32) if valid is None
             else valid.sum(dtype=jnp.float32))
    scale, bias = outputs["logit_scale"][pair], outputs["logit_bias"][pair]
    sums[pair] = (pair_sum(cfg, ctx, z[a], z[b], scale, bias, valid), count)
    values[f"{pair}/logit_scale"] = scale
    if cfg.type == "siglip":
      values[f"{pair}/logit_bias"] = bias
  sums["loss"] = (sum(sums[p][0] for p in pairs), sum(sums[p][1] for p in pairs))
  return objectives.Terms(sums=sums, values=values)


def _both(has_a, has_b):
  """bool[B] rows with both modalities, or None when every row has both (no flags given)."""
  if has_a is None or has_b is None:
    return has_b if has_a is None else has_a
  return has_a & has_b
