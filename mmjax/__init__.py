"""mmjax: one Transformer for images, text and audio, pretrained with masked modeling and
contrastive objectives in JAX/Flax NNX.

Shape suffixes. An array name may end in one letter per axis, so its layout reads at every use:
  b  batch (rows; in the ring losses, this device's rows)   n  tokens of a sequence
  d  model width                                            e  a traveling chunk's rows (ring)
  l  text length (wordpieces)                               t  audio samples or frames
  h, w, c  image height, width, channels
e.g. x_bnd [batch, tokens, width], valid_bn [batch, tokens], images_bhwc, wave_bt,
logits_bb [rows, rows] (one block of similarities), z_be. A suffix-free name is a scalar, a
dict, or an array whose shape its docstring gives.
"""
