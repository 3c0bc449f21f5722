"""AdamW with warmup-cosine schedule, gradient clipping and a weight-decay mask; updates from
non-finite gradients are skipped and counted (optax.apply_if_finite); learned contrastive
temperatures are clamped after each update (CLIP). For fine-tuning: layer-wise learning-rate
decay (optimizer.layer_decay) and a frozen backbone (optimizer.freeze='backbone', a linear
probe)."""
import functools
import math
import re

import jax
import jax.numpy as jnp
import optax

from mmjax.errors import UserError
from mmjax.train import param_names

# Weight decay applies to what a parameter is, never to its rank (a scanned model stacks a
# LayerNorm scale into a [depth, width] array): the weights of linear maps and token
# embeddings. Norm scales, biases, position / type embeddings, the mask token and the
# contrastive temperature and bias keep their values.
_DECAYED_LEAVES = ("kernel", "embedding")
# CLIP: a temperature above 100 makes the contrastive loss unstable. The parameter is the log
# of the scale; it is clamped after each update (not in the forward pass, where a clamp would
# zero its gradient and strand it above the cap).
MAX_LOGIT_SCALE = 100.0


def schedule(opt_cfg, total_steps):
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt_cfg.lr, warmup_steps=opt_cfg.warmup_steps,
      decay_steps=max(total_steps, opt_cfg.warmup_steps + 1),
      end_value=opt_cfg.lr * opt_cfg.min_lr_ratio)


def decay_mask(params):
  """True where weight decay applies: linear-map kernels and token embedding tables, by name."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: param_names.leaf(path) in _DECAYED_LEAVES, params)


def clamp_logit_scale(max_scale=MAX_LOGIT_SCALE):
  """Keeps every `logit_scale` parameter (a log scale) at most log(max_scale) after the update,
  as CLIP clamps its temperature after each step: the update is cut to land on the cap."""
  log_max = math.log(max_scale)

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("clamp_logit_scale needs the parameters.")
    def clamp(path, u, p):
      if "logit_scale" not in param_names.name(path).split("/"):
        return u
      return jnp.minimum(u, (log_max - p).astype(u.dtype))
    return jax.tree_util.tree_map_with_path(clamp, updates, params), state

  return optax.GradientTransformation(init, update)


# Where a parameter sits in depth, for layer-wise decay: before the encoder blocks (tokenizers),
# in block i, or after them (the encoder's final norm, heads). The shared encoder is
# encoder/..., a modality's tower (config.model.towers='separate') encoders/<modality>/....
_BLOCKS = re.compile(r"^(?:encoder|encoders/[^/]+)/blocks/blocks/")
_ENCODER = re.compile(r"^(?:encoder|encoders/[^/]+)/")


def layer_scales(params, depth, decay):
  """Learning-rate multipliers per parameter (BEiT's layer-wise decay): 1 after the encoder
  blocks (final norm, task head), decay**(depth - i) in block i (0 = first), decay**(depth + 1)
  before them (tokenizers). Scanned blocks (a leading layer axis) get a [depth, 1, ...] array."""
  def scale(path, x):
    name = param_names.name(path)
    blocks = _BLOCKS.match(name)
    if blocks:
      rest = name[blocks.end():].split("/")[0]
      if rest.isdigit():  # Unrolled: blocks/<i>/...
        return jnp.float32(decay ** (depth - int(rest)))
      per_layer = decay ** (depth - jnp.arange(depth, dtype=jnp.float32))
      return per_layer.reshape((depth,) + (1,) * (x.ndim - 1))
    if _ENCODER.match(name) or not name.startswith("tokenizers/"):
      return jnp.float32(1.0)
    return jnp.float32(decay ** (depth + 1))
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer(depth, decay):
  """Multiplies each parameter's update by its `layer_scales` factor."""
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = layer_scales(updates, depth, decay)
    return jax.tree.map(lambda u, s: (u * s).astype(u.dtype), updates, scales), state

  return optax.GradientTransformation(init, update)


def trainable_labels(params, freeze):
  """'train' or 'frozen' per parameter: freeze='backbone' trains only the task head (a linear
  probe); '' trains everything."""
  def label(path, _):
    head = param_names.name(path).split("/")[0] in ("head", "head_norm")
    return "train" if not freeze or head else "frozen"
  return jax.tree_util.tree_map_with_path(label, params)


def check_config(opt_cfg):
  """Raises UserError for fine-tuning options that cannot work."""
  decay, freeze = opt_cfg.get("layer_decay", 1.0), opt_cfg.get("freeze", "")
  if not 0 < decay <= 1:
    raise UserError(f"config.optimizer.layer_decay={decay!r}: use a value in (0, 1] "
                    "(1: no layer-wise decay).")
  if freeze not in ("", "backbone"):
    raise UserError(f"config.optimizer.freeze={freeze!r}: use '' (train everything) or "
                    "'backbone' (a linear probe: only the head trains).")


def make(opt_cfg, total_steps, depth=None):
  """Returns (optax transformation, learning-rate schedule).

  A step whose gradients hold a NaN or Inf changes neither the parameters nor the optimizer
  state; `nonfinite_counts` reads how many there were. Whether the run then stops is the
  trainer's call (config.on_nonfinite), so the wrapper never gives up and applies them.
  """
  check_config(opt_cfg)
  lr = schedule(opt_cfg, total_steps)
  parts = [optax.clip_by_global_norm(opt_cfg.grad_clip),
           optax.adamw(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, weight_decay=opt_cfg.weight_decay,
                       mask=decay_mask)]
  decay = opt_cfg.get("layer_decay", 1.0)
  if decay != 1.0:
    if depth is None:
      raise ValueError("layer_decay needs the encoder depth.")
    parts.append(scale_by_layer(depth, decay))
  parts.append(clamp_logit_scale())
  tx = optax.chain(*parts)
  if opt_cfg.get("freeze", ""):  # Frozen parameters get no update and no optimizer moments.
    tx = optax.multi_transform(
        {"train": tx, "frozen": optax.set_to_zero()},
        functools.partial(trainable_labels, freeze=opt_cfg.freeze))
  return optax.apply_if_finite(tx, max_consecutive_errors=jnp.iinfo(jnp.int32).max), lr


def nonfinite_counts(opt_state):
  """(non-finite steps in a row up to now, non-finite steps in all) from `make`'s state."""
  return opt_state.notfinite_count, opt_state.total_notfinite
