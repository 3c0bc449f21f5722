"""Masked language modeling: predict the word-piece ids of hidden text tokens.

cfg: weight, mask_ratio. `loss` is unweighted; the trainer applies cfg.weight.
"""
from mmjax.objectives import masked_modeling

MODALITY = "text"


def loss(outputs, cfg):
  """(cross-entropy over hidden tokens, {'accuracy'}) from the outputs' 'text' entry."""
  del cfg  # Nothing to configure beyond the weight and mask ratio, which others use.
  out = outputs[MODALITY]
  ce, accuracy = masked_modeling.masked_cross_entropy(out["logits"], out["target"],
                                                      out["loss_mask"])
  return ce, {"accuracy": accuracy}
