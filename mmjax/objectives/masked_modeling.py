"""Helpers shared by the masked-modeling objectives (masked_image, masked_text, masked_audio)."""
import jax.numpy as jnp
import optax

from mmjax import objectives

NORM_EPS = 1e-6  # MAE norm_pix epsilon; evaluators undo the normalization with the same value.


def normalize_patches(target_bnp):
  """MAE norm_pix: each patch to zero mean and unit variance over its own values."""
  mean = target_bnp.mean(-1, keepdims=True)
  var = target_bnp.var(-1, keepdims=True)
  return (target_bnp - mean) / jnp.sqrt(var + NORM_EPS)


def masked_sum(values_bn, mask_bn):
  """(sum of values where mask_bn, number of such positions), both f32 scalars."""
  mask = mask_bn.astype(jnp.float32)
  return (values_bn * mask).sum(), mask.sum()


def mean(sum_and_count):
  total, count = sum_and_count
  return total / jnp.maximum(count, 1.0)


def squared_error(pred_bnp, target_bnp):
  """f32[B, N]: squared error per token, averaged over its P values."""
  return jnp.square(pred_bnp.astype(jnp.float32) - target_bnp).mean(-1)


def masked_mse(pred_bnp, target_bnp, mask_bn):
  """Mean squared error per token (over P), averaged over the tokens where mask_bn is True."""
  return mean(masked_sum(squared_error(pred_bnp, target_bnp), mask_bn))


def cross_entropy_and_correct(logits_blv, labels_bl):
  """f32[B, L] cross-entropy and f32[B, L] 1.0 where the argmax is the label."""
  logits_blv = logits_blv.astype(jnp.float32)
  ce_bl = optax.softmax_cross_entropy_with_integer_labels(logits_blv, labels_bl)
  return ce_bl, (logits_blv.argmax(-1) == labels_bl).astype(jnp.float32)


def masked_cross_entropy(logits_blv, labels_bl, mask_bl):
  """(mean cross-entropy, accuracy) over the positions where mask_bl is True."""
  ce_bl, correct_bl = cross_entropy_and_correct(logits_blv, labels_bl)
  return mean(masked_sum(ce_bl, mask_bl)), mean(masked_sum(correct_bl, mask_bl))


def patch_reconstruction(out, cfg):
  """Masked patch regression for one modality's model outputs {'pred', 'target', 'loss_mask'}.

  Returns Terms: 'loss' = 'mse' = squared error summed over hidden tokens, and their count.
  cfg.norm_targets switches on MAE's per-patch target normalization.
  """
  target = out["target"]
  if cfg.norm_targets:
    target = normalize_patches(target)
  sse = masked_sum(squared_error(out["pred"], target), out["loss_mask"])
  return objectives.Terms(sums={"loss": sse, "mse": sse}, values={})
