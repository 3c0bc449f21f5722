"""HF transformers CLIP (`CLIPModel`, model_type 'clip') -> mmjax towers: an image tower and a
text tower (config.model.towers='separate'), each with its projection, and the logit scale.

  HF CLIPModel                                   mmjax
  vision_model.embeddings.patch_embedding        tokenizers/image/patch_embed (bias: zeros)
  vision_model.embeddings.position_embedding[1:] tokenizers/image/pos_embed [rows, cols, D]
  vision_model.embeddings.class_embedding + position_embedding[0]   tokenizers/image/cls
  vision_model.pre_layrnorm                      tokenizers/image/norm (CLIP's ln_pre)
  vision_model.encoder.layers.<i>                encoders/image/blocks/blocks/<i>
  vision_model.post_layernorm                    encoders/image/norm
  visual_projection                              projections/image/proj (bias: zeros)
  text_model.embeddings.token_embedding          tokenizers/text/token_embed
  text_model.embeddings.position_embedding       tokenizers/text/pos_embed (first text_len)
  text_model.encoder.layers.<i>                  encoders/text/blocks/blocks/<i> (causal)
  text_model.final_layer_norm                    encoders/text/norm
  text_projection                                projections/text/proj (bias: zeros)
  logit_scale                                    logit_scale/image_text
  (layers: layer_norm1 -> norm1, self_attn.q/k/v_proj -> attn/qkv, out_proj -> attn/out,
  layer_norm2 -> norm2, mlp.fc1 / fc2 -> mlp/fc1 / fc2; type_embed: zeros)

The image is pooled by its class token, the text at its end-of-text token: mmjax pools the last
valid token, so text rows must end in CLIP's end-of-text token (its tokenizer's rows do). The
towers may differ in shape (every released CLIP's text tower is narrower: config.model.tower.
text), not in their activation or LayerNorm epsilon (config.model.gelu and ln_eps are global).
"""
import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout

MODEL_TYPES = ("clip",)
# What mmjax's towers must share (one block architecture for the model).
SHARED = ("hidden_act", "layer_norm_eps")
# config.model's tower shape key -> the HF config's.
SHAPE = {"width": "hidden_size", "depth": "num_hidden_layers",
         "num_heads": "num_attention_heads", "mlp_dim": "intermediate_size"}


def towers(hf_config):
  """(text_config, vision_config) of an image-text checkpoint, UserError when they differ in
  what mmjax's towers share."""
  text, vision = hf_config["text_config"], hf_config["vision_config"]
  differ = [k for k in SHARED if text.get(k) != vision.get(k)]
  if differ:
    raise UserError("This checkpoint's text and vision towers differ in "
                    f"{', '.join(f'{k} ({text.get(k)} / {vision.get(k)})' for k in differ)}: "
                    "mmjax's towers share config.model.gelu and ln_eps.")
  return text, vision


def shapes(text, vision):
  """{dotted config.model key: value} of both towers' shapes: the image tower's as the model's
  encoder (config.model.encoder), the text tower's over it (config.model.tower.text)."""
  return ({f"encoder.{k}": vision[hf] for k, hf in SHAPE.items()}
          | {f"tower.text.{k}": text[hf] for k, hf in SHAPE.items()})


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  text, vision = towers(hf_config)
  act = vision.get("hidden_act", "quick_gelu")
  return {"towers": "separate", "block": "pre_ln", "gelu": layout.gelu(act),
          "ln_eps": float(vision.get("layer_norm_eps", 1e-5)), **shapes(text, vision),
          "cls_token": ("image",),
          "causal": ("text",), "pool": "image=cls,text=eot", "ln_pre_off": ("text",),
          "proj_norm": False, "embed_dim": hf_config["projection_dim"],
          "image.patch_size": vision["patch_size"], "image.pos_embed": "learned"}


def check_pair(kind, settings, hf_config, model_cfg, info, spec):
  """UserError listing what config and data lack for an image-text checkpoint (`kind`: its
  name; `spec`: config.init_from) whose architecture `settings` builds."""
  missing = [m for m in ("image", "text") if m not in info.modalities]
  if missing:
    raise UserError(f"config.init_from={spec} is a {kind} (image and text); dataset "
                    f"{info.name!r} lacks {missing}.")
  problems = layout.config_problems(model_cfg, settings)
  text = hf_config["text_config"]
  if info.vocab_size != text["vocab_size"]:
    problems.append(f"a vocab of {text['vocab_size']} tokens, {kind}'s (the data's has "
                    f"{info.vocab_size})")
  if info.shapes["text_ids"][0] > text["max_position_embeddings"]:
    problems.append(f"--config.data.text_len={text['max_position_embeddings']} or less")
  if problems:
    raise UserError(f"config.init_from={spec} is a {kind} that this config does not "
                    "build; set:\n  " + "\n  ".join(problems))


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  check_pair("CLIP", model_config(hf_config), hf_config, model_cfg, info, f"hf:{where}")


# A layer's tensors by layout.BLOCK_ROLES (CLIP and SigLIP).
NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
         "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")


def tower(take, hf, mm, layers, heads, out):
  """The layers of one tower (`hf`: vision_model. or text_model.) into encoders/<m>/ (`mm`)."""
  for i in range(layers):
    layout.block(take, f"{hf}encoder.layers.{i}.", f"{mm}blocks/blocks/{i}/", heads, NAMES, out)


def to_mmjax(hf_config, tensors, target_shapes):
  """({mmjax name: array}, notes) of a CLIPModel's tensors for a model of `target_shapes`."""
  text_cfg, vision_cfg = towers(hf_config)
  t, used = dict(tensors), set()

  def take(name):
    if name not in t:
      raise UserError(f"The checkpoint has no tensor {name}: it is not a complete CLIP.")
    used.add(name)
    return np.asarray(t[name], np.float32)

  out, v = {}, "vision_model."
  conv = take(v + "embeddings.patch_embedding.weight")
  width = conv.shape[0]
  out["tokenizers/image/patch_embed/kernel"] = np.ascontiguousarray(
      conv.transpose(2, 3, 1, 0).reshape(-1, width))
  out["tokenizers/image/patch_embed/bias"] = np.zeros(width, np.float32)
  pos = take(v + "embeddings.position_embedding.weight")
  side = vision_cfg["image_size"] // vision_cfg["patch_size"]
  out["tokenizers/image/pos_embed"] = pos[1:].reshape(side, side, width)
  out["tokenizers/image/cls"] = take(v + "embeddings.class_embedding") + pos[0]
  out["tokenizers/image/norm/scale"] = take(v + "pre_layrnorm.weight")
  out["tokenizers/image/norm/bias"] = take(v + "pre_layrnorm.bias")
  tower(take, v, "encoders/image/", vision_cfg["num_hidden_layers"],
         vision_cfg["num_attention_heads"], out)
  out["encoders/image/norm/scale"] = take(v + "post_layernorm.weight")
  out["encoders/image/norm/bias"] = take(v + "post_layernorm.bias")
  out["projections/image/proj/kernel"] = layout.linear_in(take("visual_projection.weight"))
  x = "text_model."
  text_len = target_shapes["tokenizers/text/pos_embed"][0]
  out["tokenizers/text/token_embed/embedding"] = take(x + "embeddings.token_embedding.weight")
  out["tokenizers/text/pos_embed"] = take(x + "embeddings.position_embedding.weight")[:text_len]
  tower(take, x, "encoders/text/", text_cfg["num_hidden_layers"],
         text_cfg["num_attention_heads"], out)
  out["encoders/text/norm/scale"] = take(x + "final_layer_norm.weight")
  out["encoders/text/norm/bias"] = take(x + "final_layer_norm.bias")
  out["projections/text/proj/kernel"] = layout.linear_in(take("text_projection.weight"))
  notes = finish(out, take("logit_scale"), text_cfg["hidden_size"], side, target_shapes)
  out |= {k: np.asarray(val) for k, val in t.items() if k not in used}
  return out, notes


def finish(out, logit_scale, text_width, side, target_shapes):
  """What a CLIP's converters (transformers', open_clip's) add alike to `out`: zero modality
  vectors and projection biases (CLIP has neither), the logit scale, the image positions
  resized to the model's grid. Returns the notes."""
  width = out["tokenizers/image/pos_embed"].shape[-1]
  embed = out["projections/text/proj/kernel"].shape[1]
  for m, w in (("image", width), ("text", text_width)):
    out[f"tokenizers/{m}/type_embed"] = np.zeros(w, np.float32)
    out[f"projections/{m}/proj/bias"] = np.zeros(embed, np.float32)
  out["logit_scale/image_text"] = np.asarray(logit_scale, np.float32).reshape(())
  grid = tuple(target_shapes.get("tokenizers/image/pos_embed", (side, side))[:2])
  notes = ["tokenizers/image/cls: the class embedding plus its position",
           "patch embedding and projection biases, modality vectors: zeros (CLIP has none)"]
  if grid != (side, side):
    out["tokenizers/image/pos_embed"] = layout.resize_bicubic(
        out["tokenizers/image/pos_embed"], *grid)
    notes.append(f"tokenizers/image/pos_embed: {side}x{side} resized to {grid[0]}x{grid[1]}")
  return notes


def export_towers(model_cfg):
  """(vision_config, text_config) entries of an image-text config.json for `model_cfg`'s
  towers: their shapes, activation and LayerNorm epsilon."""
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  shared = {"hidden_act": layout.HIDDEN_ACT[model_cfg.get("gelu", "tanh")],
            "layer_norm_eps": float(model_cfg.get("ln_eps"))}
  tower_cfg = lambda m: dict(shared, **{hf: getattr(sizes.of(model_cfg, m), k)
                                        for k, hf in SHAPE.items()})
  return tower_cfg("image"), tower_cfg("text")


# What a CLIPModel is, as config.model settings (the towers' shapes aside).
EXPORT_SETTINGS = {"towers": "separate", "block": "pre_ln", "cls_token": ("image",),
                   "causal": ("text",), "pool": "image=cls,text=eot", "ln_pre_off": ("text",),
                   "proj_norm": False}


def from_mmjax(params, model_cfg, eos_token_id, image_size=None):
  """(config.json dict, {HF name: array}) of a CLIPModel equal to the image and text towers,
  projections and logit scale in `params` ({mmjax name: float32 array}, one entry per layer).
  `eos_token_id`: the token that ends every text row (CLIP pools it); `image_size` (H, W) for
  sin-cos positions. Projections with a bias (CLIP's have none) are refused."""
  from mmjax.interop import vit  # pylint: disable=g-import-not-at-top
  vit.export_problems(model_cfg, EXPORT_SETTINGS, "A CLIPModel")
  p = params
  biased = [m for m in ("image", "text") if np.abs(p[f"projections/{m}/proj/bias"]).max() > 0]
  if biased:
    raise UserError(f"A CLIPModel cannot express this model exactly: the projections of "
                    f"{biased} have a bias (CLIP's projections have none).")
  if eos_token_id is None:
    raise UserError("A CLIPModel pools its texts at the end-of-text token: give its id "
                    "(--eos_token_id).")
  vision, text = export_towers(model_cfg)
  patch, width = model_cfg.image.patch_size, vision["hidden_size"]
  channels = p["tokenizers/image/patch_embed/kernel"].shape[0] // (patch * patch)
  grid = None if image_size is None else (image_size[0] // patch, image_size[1] // patch)
  grid, pos = vit.image_positions(p, width, grid, fold_bias=True)
  if grid[0] != grid[1]:
    raise UserError(f"A CLIPModel's images are square; this model's patch grid is {grid}.")
  text_pos = p["tokenizers/text/pos_embed"] + p["tokenizers/text/type_embed"]
  vocab = p["tokenizers/text/token_embed/embedding"].shape[0]
  vision |= {"image_size": grid[0] * patch, "patch_size": patch, "num_channels": channels}
  text |= {"vocab_size": vocab, "max_position_embeddings": len(text_pos),
           "eos_token_id": int(eos_token_id), "bos_token_id": 0, "pad_token_id": 0}
  hf_config = {"architectures": ["CLIPModel"], "model_type": "clip",
               "projection_dim": p["projections/image/proj/kernel"].shape[1],
               "logit_scale_init_value": float(p["logit_scale/image_text"]),
               "text_config": text, "vision_config": vision}
  v, x = "vision_model.", "text_model."
  t = {v + "embeddings.patch_embedding.weight": layout.patch_conv(
           p["tokenizers/image/patch_embed/kernel"], channels),
       v + "embeddings.class_embedding": p["tokenizers/image/cls"],
       v + "embeddings.position_embedding.weight": np.concatenate(
           [np.zeros((1, width), np.float32), pos]),
       v + "pre_layrnorm.weight": p["tokenizers/image/norm/scale"],
       v + "pre_layrnorm.bias": p["tokenizers/image/norm/bias"],
       v + "post_layernorm.weight": p["encoders/image/norm/scale"],
       v + "post_layernorm.bias": p["encoders/image/norm/bias"],
       "visual_projection.weight": layout.linear_in(p["projections/image/proj/kernel"]),
       x + "embeddings.token_embedding.weight": p["tokenizers/text/token_embed/embedding"],
       x + "embeddings.position_embedding.weight": text_pos,
       x + "final_layer_norm.weight": p["encoders/text/norm/scale"],
       x + "final_layer_norm.bias": p["encoders/text/norm/bias"],
       "text_projection.weight": layout.linear_in(p["projections/text/proj/kernel"]),
       "logit_scale": np.asarray(p["logit_scale/image_text"], np.float32).reshape(())}
  for hf, m, cfg in ((v, "image", vision), (x, "text", text)):
    for i in range(cfg["num_hidden_layers"]):
      layout.unblock(p, f"encoders/{m}/blocks/blocks/{i}/", f"{hf}encoder.layers.{i}.", NAMES, t)
  return hf_config, t
