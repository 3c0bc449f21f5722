"""HF transformers MAE (`ViTMAEForPreTraining` / `ViTMAEModel`, model_type 'vit_mae') -> the
mmjax pretraining model: its ViT encoder as mmjax.interop.vit maps it, and MAE's decoder as
mmjax's masked-modeling decoder, so an imported MAE reconstructs as it did.

  HF ViTMAEForPreTraining                       mmjax
  vit.*                                         the image tower (mmjax.interop.vit)
  decoder.decoder_embed                         decoder/embed
  decoder.mask_token                            decoder/mask_token
  decoder.decoder_pos_embed[1:]                 decoder/pos/image [rows, cols, Dd] (learned:
                                                MAE's sin-cos channels are laid out otherwise)
  decoder.decoder_layers.<i> (or decoder_encoder.layer.<i>)   decoder/blocks/blocks/<i>
  decoder.decoder_norm, decoder.decoder_pred    decoder/norm, decoder/heads/image
  (decoder/type_embed: zeros)

MAE's decoder sees the encoder's class token output first, at position zero (its
decoder_pos_embed[0] is zero; another value is refused), as mmjax's decoder does for a modality
with a class token. Masking: give the same hidden patches (ViTMAE draws them from `noise`).
A ViTMAEModel (no decoder) imports its encoder; the decoder is then new.
"""
import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout
from mmjax.interop import vit

MODEL_TYPES = ("vit_mae",)
DECODER = "decoder/"


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  return vit.model_config(hf_config) | {
      "decoder.width": hf_config["decoder_hidden_size"],
      "decoder.depth": hf_config["decoder_num_hidden_layers"],
      "decoder.num_heads": hf_config["decoder_num_attention_heads"],
      "decoder.mlp_dim": hf_config["decoder_intermediate_size"],
      "image.decoder_pos_embed": "learned"}


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  vit.check(hf_config, model_cfg, info, where, model_config(hf_config), "an MAE")


def to_mmjax(hf_config, tensors, target_shapes):
  """({mmjax name: array}, notes) of a ViTMAE checkpoint's tensors for a model of
  `target_shapes`."""
  encoder = {k: v for k, v in tensors.items() if not k.startswith("decoder.")}
  out, notes = vit.to_mmjax(hf_config, encoder, target_shapes)
  t = {k.removeprefix("decoder.").replace("decoder_layers.", "decoder_encoder.layer."): v
       for k, v in tensors.items() if k.startswith("decoder.")}
  if not t:
    return out, notes + ["decoder: new (the checkpoint has none: a ViTMAEModel)"]
  used = set()

  def take(name):
    if name not in t:
      raise UserError(f"The checkpoint has no tensor decoder.{name}: it is not a complete MAE.")
    used.add(name)
    return np.asarray(t[name], np.float32)

  width = hf_config["decoder_hidden_size"]
  embed = layout.linear_in(take("decoder_embed.weight"))
  if DECODER + "embed/kernel" in target_shapes:
    out[DECODER + "embed/kernel"], out[DECODER + "embed/bias"] = embed, take("decoder_embed.bias")
  else:  # Towers of different widths: the image modality's input map.
    out[DECODER + "embed/image/kernel"] = embed
    out[DECODER + "embed/image/bias"] = take("decoder_embed.bias")
  out[DECODER + "mask_token"] = take("mask_token").reshape(width)
  pos = take("decoder_pos_embed")[0]
  if np.abs(pos[0]).max() > 0:
    raise UserError("This MAE's decoder_pos_embed[0] (the class token's position) is not zero: "
                    "mmjax's decoder adds no position to the class token.")
  side = hf_config["image_size"] // hf_config["patch_size"]
  table = pos[1:].reshape(side, side, width)
  grid = tuple(target_shapes.get(DECODER + "pos/image", (side, side))[:2])
  out[DECODER + "pos/image"] = table if grid == (side, side) else layout.resize_bicubic(
      table, *grid)
  for i in range(hf_config["decoder_num_hidden_layers"]):
    layout.block(take, f"decoder_encoder.layer.{i}.", f"{DECODER}blocks/blocks/{i}/",
                 hf_config["decoder_num_attention_heads"], vit.NAMES, out)
  out[DECODER + "norm/scale"], out[DECODER + "norm/bias"] = (take("decoder_norm.weight"),
                                                             take("decoder_norm.bias"))
  out[DECODER + "heads/image/kernel"] = layout.linear_in(take("decoder_pred.weight"))
  out[DECODER + "heads/image/bias"] = take("decoder_pred.bias")
  out[DECODER + "type_embed"] = np.zeros(target_shapes.get(DECODER + "type_embed", (1, width)),
                                         np.float32)
  out |= {"decoder." + k: np.asarray(v) for k, v in t.items() if k not in used}
  notes.append(f"{DECODER}type_embed: zeros (MAE has no modality vector)")
  if grid != (side, side):
    notes.append(f"{DECODER}pos/image: {side}x{side} resized to {grid[0]}x{grid[1]}")
  return out, notes
