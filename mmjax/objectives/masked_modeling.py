"""Helpers shared by the masked-modeling objectives (masked_image, masked_text, masked_audio)."""
import jax.numpy as jnp
import optax

from mmjax import objectives
from mmjax.errors import UserError

NORM_EPS = 1e-6  # MAE norm_pix epsilon; evaluators undo the normalization with the same value.
# cfg.norm_variance: 'unbiased' divides by P - 1 as MAE does (torch's Tensor.var in
# models_mae.py forward_loss); 'population' divides by P (what mmjax did before), which makes
# targets sqrt(P / (P - 1)) times MAE's: x1.155 for 2x2 gray patches.
NORM_VARIANCES = ("unbiased", "population")


def check_config(cfg):
  """Raises UserError naming the key for a bad masked image / audio objective config."""
  variance = cfg.get("norm_variance", "unbiased")
  if variance not in NORM_VARIANCES:
    raise UserError(f"norm_variance={variance!r} (config.objectives.<masked_image|"
                    f"masked_audio>): use one of {list(NORM_VARIANCES)}.")


def patch_stats(target_bnp, cfg):
  """(mean, std) f32[B, N, 1] of each patch's own values, as MAE's norm_pix uses them:
  std = sqrt(var + 1e-6), var unbiased unless cfg.norm_variance='population'."""
  ddof = 0 if cfg.get("norm_variance", "unbiased") == "population" else 1
  mean = target_bnp.mean(-1, keepdims=True)
  var = target_bnp.var(-1, keepdims=True, ddof=ddof)
  return mean, jnp.sqrt(var + NORM_EPS)


def normalize_patches(target_bnp, cfg):
  """MAE norm_pix: each patch to zero mean and unit variance over its own values."""
  mean, std = patch_stats(target_bnp, cfg)
  return (target_bnp - mean) / std


def masked_sum(values_bn, mask_bn):
  """(sum of values where mask_bn, number of such positions), both f32 scalars."""
  mask = mask_bn.astype(jnp.float32)
  return (values_bn * mask).sum(), mask.sum()


def squared_error(pred_bnp, target_bnp):
  """f32[B, N]: squared error per token, averaged over its P values."""
  return jnp.square(pred_bnp.astype(jnp.float32) - target_bnp).mean(-1)


def cross_entropy_and_correct(logits_blv, labels_bl):
  """f32[B, L] cross-entropy and f32[B, L] 1.0 where the argmax is the label."""
  logits_blv = logits_blv.astype(jnp.float32)
  ce_bl = optax.softmax_cross_entropy_with_integer_labels(logits_blv, labels_bl)
  return ce_bl, (logits_blv.argmax(-1) == labels_bl).astype(jnp.float32)


def patch_reconstruction(out, cfg):
  """Masked patch regression for one modality's model outputs {'pred', 'target', 'loss_mask'}.

  Returns Terms: 'loss' = 'mse' = squared error summed over hidden tokens, and their count.
  cfg.norm_targets switches on MAE's per-patch target normalization (cfg.norm_variance).
  """
  target = out["target"]
  if cfg.norm_targets:
    target = normalize_patches(target, cfg)
  sse = masked_sum(squared_error(out["pred"], target), out["loss_mask"])
  return objectives.Terms(sums={"loss": sse, "mse": sse}, values={})
