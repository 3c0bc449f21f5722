"""Masked language modeling: predict the word-piece ids of hidden text tokens.

cfg: weight, mask_ratio. `loss` is unweighted; the trainer applies cfg.weight.
"""
from mmjax import objectives
from mmjax.objectives import masked_modeling

MODALITY = "text"


def loss(outputs, cfg, ctx=None):
  """Terms: cross-entropy and accuracy over hidden tokens, from the outputs' 'text' entry."""
  del cfg, ctx  # Nothing to configure beyond the weight and mask ratio, which others use.
  out = outputs[MODALITY]
  ce_bl, correct_bl = masked_modeling.cross_entropy_and_correct(out["pred"], out["target"])
  return objectives.Terms(
      sums={"loss": masked_modeling.masked_sum(ce_bl, out["loss_mask"]),
            "accuracy": masked_modeling.masked_sum(correct_bl, out["loss_mask"])},
      values={})
