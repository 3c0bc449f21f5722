"""Contrastive alignment of every pair of modalities: InfoNCE (CLIP) or sigmoid (SigLIP).

cfg: weight, type ('infonce' | 'siglip'), view ('clean' | 'masked', used by the trainer to ask
the model for embeddings). `loss` is unweighted; the trainer applies cfg.weight.
The similarity matrix spans the global batch: under jit with a batch-sharded mesh, XLA gathers
the embeddings it needs.
"""
import jax
import jax.numpy as jnp
import optax

from mmjax.errors import UserError


def _similarities(z_a, z_b):
  # HIGHEST: at scale ~100, TPU's default bfloat16 passes would move logits by about 1.
  return jnp.matmul(z_a, z_b.T, precision=jax.lax.Precision.HIGHEST)


def infonce(z_a, z_b, scale):
  """CLIP loss for L2-normalized f32[B, E] pairs: symmetric softmax cross-entropy over the
  in-batch similarities times scale, row i's positive being column i."""
  logits = scale * _similarities(z_a, z_b)
  labels = jnp.arange(logits.shape[0])
  return 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())


def siglip(z_a, z_b, scale, bias):
  """SigLIP loss: -sum over all B*B pairs of log sigmoid(label * (scale * sim + bias)), label +1
  on the diagonal and -1 elsewhere, divided by the batch size."""
  logits = scale * _similarities(z_a, z_b) + bias
  labels = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jax.nn.log_sigmoid(labels * logits).sum() / logits.shape[0]


def check_config(cfg):
  """Raises UserError naming the key for a bad `config.objectives.contrastive`."""
  for key, allowed in (("type", ("infonce", "siglip")), ("view", ("clean", "masked"))):
    if cfg[key] not in allowed:
      raise UserError(f"config.objectives.contrastive.{key}={cfg[key]!r}: use one of "
                      f"{list(allowed)}.")


def loss(outputs, cfg):
  """Mean over the pairs of modalities with embeddings; metrics per pair (e.g. 'image_text')."""
  z = outputs.get("embeddings")
  if not z:
    raise UserError("The contrastive objective needs embeddings: call the model with "
                    "embeddings='clean' or 'masked'.")
  check_config(cfg)
  pairs = [p for p in outputs["logit_scale"] if all(m in z for m in p.split("_"))]
  if not pairs:
    raise UserError(f"The contrastive objective needs two modalities, got {list(z)}.")
  metrics = {}
  for pair in pairs:
    a, b = pair.split("_")
    scale = outputs["logit_scale"][pair]
    if cfg.type == "infonce":
      metrics[pair] = infonce(z[a], z[b], scale)
    else:
      metrics[pair] = siglip(z[a], z[b], scale, outputs["logit_bias"][pair])
      metrics[f"{pair}/logit_bias"] = outputs["logit_bias"][pair]
    metrics[f"{pair}/logit_scale"] = scale
  return sum(metrics[p] for p in pairs) / len(pairs), metrics
