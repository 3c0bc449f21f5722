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
The towers may differ in shape (config.model.tower.text); a text head whose output is not as
wide as the vision tower is refused.
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
  text, vision = _towers(hf_config)
  act = vision.get("hidden_act", "gelu_pytorch_tanh")
  return {"towers": "separate", "block": "pre_ln", "gelu": layout.gelu(act),
          "ln_eps": float(vision.get("layer_norm_eps", 1e-6)), **clip.shapes(text, vision),
          "pool": "image=map,text=eot",
          "ln_pre_off": ("image", "text"), "proj_norm": False,
          "embed_dim": vision["hidden_size"], "image.patch_size": vision["patch_size"],
          "image.pos_embed": "learned"}


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  clip.check_pair("SigLIP", model_config(hf_config), hf_config, model_cfg, info, f"hf:{where}")


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
  for m, w in (("image", width), ("text", text_cfg["hidden_size"])):
    out[f"tokenizers/{m}/type_embed"] = np.zeros(w, np.float32)
  out["logit_scale/image_text"] = take("logit_scale").reshape(())
  out["logit_bias/image_text"] = take("logit_bias").reshape(())
  out |= {k: np.asarray(val) for k, val in t.items() if k not in used}
  notes = ["projections/image/proj: the identity (the image embedding is the MAP head's output)",
           "modality vectors: zeros (SigLIP has none)"]
  if grid != (side, side):
    notes.append(f"tokenizers/image/pos_embed: {side}x{side} resized to {grid[0]}x{grid[1]}")
  return out, notes


# What a SiglipModel is, as config.model settings (the towers' shapes aside).
EXPORT_SETTINGS = {"towers": "separate", "block": "pre_ln", "cls_token": (), "causal": (),
                   "pool": "image=map,text=eot", "ln_pre_off": ("image", "text"),
                   "proj_norm": False}


def from_mmjax(params, model_cfg, image_size=None):
  """(config.json dict, {HF name: array}) of a SiglipModel equal to the towers, MAP head, text
  head, logit scale and bias in `params` ({mmjax name: float32 array}, one entry per layer);
  `image_size` (H, W) for sin-cos positions. SigLIP's image embedding is its MAP head's output:
  an image projection other than the identity is refused."""
  from mmjax.interop import vit  # pylint: disable=g-import-not-at-top
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  vit.export_problems(model_cfg, EXPORT_SETTINGS, "A SiglipModel")
  p = params
  width = sizes.of(model_cfg, "image").width
  if not (np.array_equal(p["projections/image/proj/kernel"], np.eye(width, dtype=np.float32))
          and not p["projections/image/proj/bias"].any()):
    raise UserError("A SiglipModel cannot express this model exactly: its image projection is "
                    "not the identity (SigLIP's image embedding is the MAP head's output).")
  vision, text = clip.export_towers(model_cfg)
  patch = model_cfg.image.patch_size
  channels = p["tokenizers/image/patch_embed/kernel"].shape[0] // (patch * patch)
  grid = None if image_size is None else (image_size[0] // patch, image_size[1] // patch)
  grid, pos = vit.image_positions(p, width, grid, fold_bias=False)
  if grid[0] != grid[1]:
    raise UserError(f"A SiglipModel's images are square; this model's patch grid is {grid}.")
  text_pos = p["tokenizers/text/pos_embed"] + p["tokenizers/text/type_embed"]
  vision |= {"image_size": grid[0] * patch, "patch_size": patch, "num_channels": channels}
  text |= {"vocab_size": p["tokenizers/text/token_embed/embedding"].shape[0],
           "max_position_embeddings": len(text_pos),
           "projection_size": p["projections/text/proj/kernel"].shape[1]}
  hf_config = {"architectures": ["SiglipModel"], "model_type": "siglip",
               "text_config": text, "vision_config": vision}
  v, x, h, q = "vision_model.", "text_model.", "vision_model.head.", "pool_heads/image/"
  kv = p[q + "kv/kernel"].reshape(width, 2, width)
  t = {v + "embeddings.patch_embedding.weight": layout.patch_conv(
           p["tokenizers/image/patch_embed/kernel"], channels),
       v + "embeddings.patch_embedding.bias": p["tokenizers/image/patch_embed/bias"],
       v + "embeddings.position_embedding.weight": pos,
       v + "post_layernorm.weight": p["encoders/image/norm/scale"],
       v + "post_layernorm.bias": p["encoders/image/norm/bias"],
       h + "probe": p[q + "probe"].reshape(1, 1, width),
       h + "attention.in_proj_weight": np.concatenate(
           [layout.linear_in(p[q + "q/kernel"].reshape(width, width)),
            layout.linear_in(kv[:, 0]), layout.linear_in(kv[:, 1])]),
       h + "attention.in_proj_bias": np.concatenate(
           [p[q + "q/bias"].reshape(-1), p[q + "kv/bias"].reshape(-1)]),
       h + "attention.out_proj.weight": layout.linear_in(
           p[q + "out/kernel"].reshape(width, width)),
       h + "attention.out_proj.bias": p[q + "out/bias"],
       h + "layernorm.weight": p[q + "norm/scale"], h + "layernorm.bias": p[q + "norm/bias"],
       x + "embeddings.token_embedding.weight": p["tokenizers/text/token_embed/embedding"],
       x + "embeddings.position_embedding.weight": text_pos,
       x + "final_layer_norm.weight": p["encoders/text/norm/scale"],
       x + "final_layer_norm.bias": p["encoders/text/norm/bias"],
       x + "head.weight": layout.linear_in(p["projections/text/proj/kernel"]),
       x + "head.bias": p["projections/text/proj/bias"],
       "logit_scale": np.asarray(p["logit_scale/image_text"], np.float32).reshape(1),
       "logit_bias": np.asarray(p["logit_bias/image_text"], np.float32).reshape(1)}
  for name in ("fc1", "fc2"):
    t[f"{h}mlp.{name}.weight"] = layout.linear_in(p[f"{q}mlp/{name}/kernel"])
    t[f"{h}mlp.{name}.bias"] = p[f"{q}mlp/{name}/bias"]
  for hf, m, cfg in ((v, "image", vision), (x, "text", text)):
    for i in range(cfg["num_hidden_layers"]):
      layout.unblock(p, f"encoders/{m}/blocks/blocks/{i}/", f"{hf}encoder.layers.{i}.",
                     clip.NAMES, t)
  return hf_config, t
