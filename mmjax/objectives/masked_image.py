"""Masked image modeling (MAE): regress the pixels of hidden patches.

cfg: weight, mask_ratio, norm_targets. `loss` is unweighted; the trainer applies cfg.weight.
"""
from mmjax.objectives import masked_modeling

MODALITY = "image"


def loss(outputs, cfg):
  """(scalar loss, metrics) from the model outputs' 'image' entry."""
  return masked_modeling.patch_reconstruction(outputs[MODALITY], cfg)
