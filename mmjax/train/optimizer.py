"""AdamW with warmup-cosine schedule, gradient clipping and a weight-decay mask; updates from
non-finite gradients are skipped and counted (optax.apply_if_finite)."""
import jax
import jax.numpy as jnp
import optax

# Parameters whose path contains one of these get no weight decay: norms and biases (1-D), and
# embeddings that encode where or what a token is rather than content.
_NO_DECAY_NAMES = ("bias", "pos", "type", "mask_token", "logit_scale", "logit_bias")


def schedule(opt_cfg, total_steps):
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_cfg.lr, warmup_steps=opt_cfg.warmup_steps,
      decay_steps=max(total_steps, opt_cfg.warmup_steps + 1),
      end_value=opt_cfg.lr * opt_cfg.min_lr_ratio)


def decay_mask(params):
  """True where weight decay applies: matrices that are not position/type embeddings."""
  def decays(path, x):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
    return x.ndim >= 2 and not any(n in name for n in _NO_DECAY_NAMES)
  return jax.tree_util.tree_map_with_path(decays, params)


def make(opt_cfg, total_steps):
  """Returns (optax transformation, learning-rate schedule).

  A step whose gradients hold a NaN or Inf changes neither the parameters nor the optimizer
  state; `nonfinite_counts` reads how many there were. Whether the run then stops is the
  trainer's call (config.on_nonfinite), so the wrapper never gives up and applies them.
  """
  lr = schedule(opt_cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(opt_cfg.grad_clip),
      optax.adamw(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay,
                  mask=decay_mask))
  return optax.apply_if_finite(tx, max_consecutive_errors=jnp.iinfo(jnp.int32).max), lr


def nonfinite_counts(opt_state):
  """(non-finite steps in a row up to now, non-finite steps in all) from `make`'s state."""
  return opt_state.notfinite_count, opt_state.total_notfinite
