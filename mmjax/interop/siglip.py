"""HF transformers SigLIP (`SiglipModel`, model_type 'siglip') -> mmjax towers: an image tower
pooled by attention (SigLIP's MAP head), a text tower pooled at its last token with its head,
the logit scale and the logit bias.

  HF SiglipModel                                 mmjax
  vision_model.embeddings.patch_embedding        tokenizers/image/patch_embed
  vision_model.embeddings.position_embedding     tokenizers/image/pos_embed [rows, cols, D]
  vision_model.encoder.layers.<i>                encoders/image/blocks/blocks/<i>
  vision_model.post_layernorm                    encoders/image/norm
  vision_model.head (probe, attention, layernorm, mlp)   pool_heads/image (MAPHead)
  (the image embedding is the head's output)     projections/image/proj: the identity
  text_model.embeddings.token_embedding / position_embedding   tokenizers/text/...
  text_model.encoder.layers.<i>                  encoders/text/blocks/blocks/<i>
  text_model.final_layer_norm                    encoders/text/norm
  text_model.head                                projections/text/proj
  logit_scale, logit_bias                        logit_scale/image_text, logit_bias/image_text

SigLIP reads its texts padded to their full length with no attention mask and pools the last
position: give mmjax rows that fill text_len (every token valid), as SigLIP's processor does.
Towers of different shapes, and a text head whose width is not the vision width, are refused.
"""
import numpy as np

from mmjax.errors import UserError
from mmjax.interop import clip
from mmjax.interop import layout

MODEL_TYPES = ("siglip",)


def _towers(hf_config):
  text, vision = clip.towers(hf_config)
  if text.get("projection_size", text["hidden_size"]) != vision["hidden_size"]:
    raise UserError("This SigLIP's text head is not as wide as its vision tower: mmjax's "
                    "embeddings of both modalities have one width.")
  return text, vision


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  _, vision = _towers(hf_config)
  act = vision.get("hidden_act", "gelu_pytorch_tanh")
  if act not in clip.GELU:
    raise UserError(f"hidden_act={act!r} in the checkpoint's config.json: mmjax has "
                    f"{sorted(clip.GELU)}.")
  return {"towers": "separate", "block": "pre_ln", "gelu": clip.GELU[act],
          "ln_eps": float(vision.get("layer_norm_eps", 1e-6)),
          "encoder.width": vision["hidden_size"], "encoder.depth": vision["num_hidden_layers"],
          "encoder.num_heads": vision["num_attention_heads"],
          "encoder.mlp_dim": vision["intermediate_size"], "pool": "image=map,text=eot",
          "ln_pre_off": ("image", "text"), "proj_norm": False,
          "embed_dim": vision["hidden_size"], "image.patch_size": vision["patch_size"],
          "image.pos_embed": "learned"}


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  clip.check_pair("SigLIP", model_config(hf_config), hf_config, model_cfg, info, where)


def to_mmjax(hf_config, tensors, target_shapes):
  """({mmjax name: array}, notes) of a SiglipModel's tensors for a model of `target_shapes`."""
  text_cfg, vision_cfg = _towers(hf_config)
  t, used = dict(tensors), set()

  def take(name):
    if name not in t:
      raise UserError(f"The checkpoint has no tensor {name}: it is not a complete SigLIP.")
    used.add(name)
    return np.asarray(t[name], np.float32)

  out, v, x = {}, "vision_model.", "text_model."
  conv = take(v + "embeddings.patch_embedding.weight")
  width, heads = conv.shape[0], vision_cfg["num_attention_heads"]
  out["tokenizers/image/patch_embed/kernel"] = np.ascontiguousarray(
      conv.transpose(2, 3, 1, 0).reshape(-1, width))
  out["tokenizers/image/patch_embed/bias"] = take(v + "embeddings.patch_embedding.bias")
  side = vision_cfg["image_size"] // vision_cfg["patch_size"]
  pos = take(v + "embeddings.position_embedding.weight").reshape(side, side, width)
  grid = tuple(target_shapes.get("tokenizers/image/pos_embed", (side, side))[:2])
  out["tokenizers/image/pos_embed"] = (pos if grid == (side, side)
                                       else layout.resize_bicubic(pos, *grid))
  clip.tower(take, v, "encoders/image/", vision_cfg["num_hidden_layers"], heads, out)
  out["encoders/image/norm/scale"] = take(v + "post_layernorm.weight")
  out["encoders/image/norm/bias"] = take(v + "post_layernorm.bias")
  h, p = v + "head.", "pool_heads/image/"
  out[p + "probe"] = take(h + "probe").reshape(width)
  in_w, in_b = take(h + "attention.in_proj_weight"), take(h + "attention.in_proj_bias")
  d = width // heads
  out[p + "q/kernel"] = layout.linear_in(in_w[:width]).reshape(width, heads, d)
  out[p + "q/bias"] = in_b[:width].reshape(heads, d)
  out[p + "kv/kernel"] = np.stack([layout.linear_in(in_w[width:2 * width]),
                                   layout.linear_in(in_w[2 * width:])], 1).reshape(
                                       width, 2, heads, d)
  out[p + "kv/bias"] = in_b[width:].reshape(2, heads, d)
  out[p + "out/kernel"] = layout.out_in(take(h + "attention.out_proj.weight"), heads)
  out[p + "out/bias"] = take(h + "attention.out_proj.bias")
  out[p + "norm/scale"] = take(h + "layernorm.weight")
  out[p + "norm/bias"] = take(h + "layernorm.bias")
  for name in ("fc1", "fc2"):
    out[p + f"mlp/{name}/kernel"] = layout.linear_in(take(f"{h}mlp.{name}.weight"))
    out[p + f"mlp/{name}/bias"] = take(f"{h}mlp.{name}.bias")
  out["projections/image/proj/kernel"] = np.eye(width, dtype=np.float32)
  out["projections/image/proj/bias"] = np.zeros(width, np.float32)
  text_len = target_shapes["tokenizers/text/pos_embed"][0]
  out["tokenizers/text/token_embed/embedding"] = take(x + "embeddings.token_embedding.weight")
  out["tokenizers/text/pos_embed"] = take(x + "embeddings.position_embedding.weight")[:text_len]
  clip.tower(take, x, "encoders/text/", text_cfg["num_hidden_layers"],
              text_cfg["num_attention_heads"], out)
  out["encoders/text/norm/scale"] = take(x + "final_layer_norm.weight")
  out["encoders/text/norm/bias"] = take(x + "final_layer_norm.bias")
  out["projections/text/proj/kernel"] = layout.linear_in(take(x + "head.weight"))
  out["projections/text/proj/bias"] = take(x + "head.bias")
  for m in ("image", "text"):
    out[f"tokenizers/{m}/type_embed"] = np.zeros(width, np.float32)
  out["logit_scale/image_text"] = take("logit_scale").reshape(())
  out["logit_bias/image_text"] = take("logit_bias").reshape(())
  out |= {k: np.asarray(val) for k, val in t.items() if k not in used}
  notes = ["projections/image/proj: the identity (the image embedding is the MAP head's output)",
           "modality vectors: zeros (SigLIP has none)"]
  if grid != (side, side):
    notes.append(f"tokenizers/image/pos_embed: {side}x{side} resized to {grid[0]}x{grid[1]}")
  return out, notes
