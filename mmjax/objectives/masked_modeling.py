"""Helpers shared by the masked-modeling objectives (masked_image, masked_text, masked_audio)."""
import jax.numpy as jnp
import optax

NORM_EPS = 1e-6  # MAE norm_pix epsilon; evaluators undo the normalization with the same value.


def normalize_patches(target_bnp):
  """MAE norm_pix: each patch to zero mean and unit variance over its own values."""
  mean = target_bnp.mean(-1, keepdims=True)
  var = target_bnp.var(-1, keepdims=True)
  return (target_bnp - mean) / jnp.sqrt(var + NORM_EPS)


def _masked_mean(values_bn, mask_bn):
  mask = mask_bn.astype(jnp.float32)
  return (values_bn * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def masked_mse(pred_bnp, target_bnp, mask_bn):
  """Mean squared error per token (over P), averaged over the tokens where mask_bn is True."""
  err_bn = jnp.square(pred_bnp.astype(jnp.float32) - target_bnp).mean(-1)
  return _masked_mean(err_bn, mask_bn)


def masked_cross_entropy(logits_blv, labels_bl, mask_bl):
  """(mean cross-entropy, accuracy) over the positions where mask_bl is True."""
  logits_blv = logits_blv.astype(jnp.float32)
  ce_bl = optax.softmax_cross_entropy_with_integer_labels(logits_blv, labels_bl)
  correct_bl = (logits_blv.argmax(-1) == labels_bl).astype(jnp.float32)
  return _masked_mean(ce_bl, mask_bl), _masked_mean(correct_bl, mask_bl)


def patch_reconstruction(out, cfg):
  """Masked patch regression for one modality's model outputs {'pred', 'target', 'loss_mask'}.

  Returns (loss, metrics). cfg.norm_targets switches on MAE's per-patch target normalization.
  """
  target = out["target"]
  if cfg.norm_targets:
    target = normalize_patches(target)
  mse = masked_mse(out["pred"], target, out["loss_mask"])
  return mse, {"mse": mse}
