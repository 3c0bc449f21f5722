"""Classification: softmax cross-entropy of a classifier's logits against the example labels.

cfg: weight, label_smoothing. `loss` is unweighted; the trainer applies cfg.weight.
"""
import jax
import jax.numpy as jnp
import optax

from mmjax import objectives
from mmjax.errors import UserError


def check_config(cfg):
  smoothing = cfg.get("label_smoothing", 0.0)
  if not 0.0 <= smoothing < 1.0:
    raise UserError(f"config.objectives.classification.label_smoothing={smoothing!r}: "
                    "use a value in [0, 1).")


def loss(outputs, cfg, ctx=None):
  """Terms: cross-entropy and accuracy summed over the rows, and the row count."""
  del ctx  # Rows are independent.
  if "classification" not in outputs:
    raise UserError("The classification objective needs a classifier model "
                    "(config.model.name='classifier', or 'raw' for the raw-input baseline).")
  out = outputs["classification"]
  logits = out["logits"].astype(jnp.float32)
  targets = optax.smooth_labels(jax.nn.one_hot(out["labels"], logits.shape[-1]),
                                cfg.get("label_smoothing", 0.0))
  ce = optax.softmax_cross_entropy(logits, targets)
  correct = (logits.argmax(-1) == out["labels"]).astype(jnp.float32)
  count = jnp.asarray(logits.shape[0], jnp.float32)
  return objectives.Terms(sums={"loss": (ce.sum(), count), "accuracy": (correct.sum(), count)},
                          values={})
