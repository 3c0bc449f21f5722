"""AdamW with warmup-cosine schedule, gradient clipping and a weight-decay mask."""
import jax
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
  """Returns (optax transformation, learning-rate schedule)."""
  lr = schedule(opt_cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(opt_cfg.grad_clip),
      optax.adamw(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay,
                  mask=decay_mask))
  return tx, lr
