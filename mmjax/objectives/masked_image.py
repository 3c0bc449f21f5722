"""Masked image modeling (MAE): regress the pixels of hidden patches.

cfg: weight, mask_ratio, norm_targets, norm_variance (see masked_modeling). `loss` is
unweighted; the trainer applies cfg.weight.
"""
from mmjax.objectives import masked_modeling

check_config = masked_modeling.check_config

MODALITY = "image"


def loss(outputs, cfg, ctx=None):
  """Terms (see mmjax.objectives) from the model outputs' 'image' entry; rows are independent,
  so the context does not matter."""
  del ctx
  return masked_modeling.patch_reconstruction(outputs[MODALITY], cfg)
