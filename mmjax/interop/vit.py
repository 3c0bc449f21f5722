"""HF transformers ViT image encoders (`ViTModel`, model_type 'vit') -> an mmjax image tower:
the image tokenizer with learned positions and a class token, no LayerNorm before the encoder,
pre-LN blocks with the checkpoint's epsilon and exact GELU, the final LayerNorm, pooled by the
class token (`model_config`).

  HF ViTModel (legacy names, as save_pretrained writes them; transformers 5's own are mapped)
  embeddings.patch_embeddings.projection   tokenizers/image/patch_embed ([p, p, C] flattened)
  embeddings.position_embeddings[1:]       tokenizers/image/pos_embed [rows, cols, D]
  embeddings.cls_token + position_embeddings[0]   tokenizers/image/cls
  encoder.layer.<i>.layernorm_before       encoder/blocks/blocks/<i>/norm1
  encoder.layer.<i>.attention.attention.query/key/value   .../attn/qkv (fused)
  encoder.layer.<i>.attention.output.dense .../attn/out
  encoder.layer.<i>.layernorm_after        .../norm2
  encoder.layer.<i>.intermediate.dense     .../mlp/fc1
  encoder.layer.<i>.output.dense           .../mlp/fc2
  layernorm                                encoder/norm
  (tokenizers/image/type_embed: zeros; ViT has no modality vector)

Not imported, reported unused: the pooler (dense + tanh on the class token) and a
classification head. Inputs: the images as the checkpoint's processor normalizes them, given
to mmjax as float images (mmjax.models.tokenizers: float images are used as they are).
"""
import re

import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout

MODEL_TYPES = ("vit",)
IMAGE = "tokenizers/image/"
LAYER = "encoder/blocks/blocks/{i}/"
# A layer's tensors by layout.BLOCK_ROLES.
NAMES = ("attention.attention.query", "attention.attention.key", "attention.attention.value",
         "attention.output.dense", "layernorm_before", "layernorm_after", "intermediate.dense",
         "output.dense")
# transformers 5's own names -> the legacy names of saved checkpoints.
_V5 = ((r"^layers\.(\d+)\.", r"encoder.layer.\1."),
       (r"attention\.q_proj", "attention.attention.query"),
       (r"attention\.k_proj", "attention.attention.key"),
       (r"attention\.v_proj", "attention.attention.value"),
       (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "intermediate.dense"),
       (r"mlp\.fc2", "output.dense"))


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  act = hf_config.get("hidden_act", "gelu")
  if not hf_config.get("qkv_bias", True):
    raise UserError("qkv_bias=false in the checkpoint's config.json: mmjax's attention has "
                    "q/k/v biases (they would import as zeros, but the export would not be "
                    "this architecture).")
  return {"block": "pre_ln", "ln_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
          "gelu": layout.gelu(act), "encoder.width": hf_config["hidden_size"],
          "encoder.depth": hf_config["num_hidden_layers"],
          "encoder.num_heads": hf_config["num_attention_heads"],
          "encoder.mlp_dim": hf_config["intermediate_size"], "cls_token": ("image",), "pool": "image=cls",
          "ln_pre_off": ("image",), "image.patch_size": hf_config["patch_size"],
          "image.pos_embed": "learned"}


def check(hf_config, model_cfg, info, where, settings=None, kind="a ViT"):
  """UserError listing every config key that differs from the checkpoint's architecture
  (`settings`: its model_config, by default a ViT's; `kind`: what it is, for the message)."""
  if "image" not in info.modalities:
    raise UserError(f"config.init_from=hf:{where} is an image encoder; dataset {info.name!r} "
                    f"has {list(info.modalities)}.")
  problems = layout.config_problems(model_cfg, settings or model_config(hf_config))
  channels = info.shapes["image"][-1]
  if channels != hf_config.get("num_channels", 3):
    problems.append(f"images with {hf_config.get('num_channels', 3)} channels (the data has "
                    f"{channels})")
  if problems:
    raise UserError(f"config.init_from=hf:{where} is {kind} that this config does not build; "
                    "set:\n  " + "\n  ".join(problems))


def _legacy(name):
  for pattern, repl in _V5:
    name = re.sub(pattern, repl, name)
  return name


def to_mmjax(hf_config, tensors, target_shapes):
  """({mmjax name: array}, notes) of the checkpoint's tensors (HF names, any 'vit.' prefix),
  for a model with parameters of `target_shapes`."""
  prefix = "vit." if any(k.startswith("vit.") for k in tensors) else ""
  t = {_legacy(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}
  heads, out, used = hf_config["num_attention_heads"], {}, set()

  def take(name):
    if name not in t:
      raise UserError(f"The checkpoint has no tensor {name}: it is not a complete ViT.")
    used.add(name)
    return np.asarray(t[name], np.float32)

  conv = take("embeddings.patch_embeddings.projection.weight")  # [D, C, p, p]
  width = conv.shape[0]
  out[IMAGE + "patch_embed/kernel"] = np.ascontiguousarray(
      conv.transpose(2, 3, 1, 0).reshape(-1, width))
  out[IMAGE + "patch_embed/bias"] = take("embeddings.patch_embeddings.projection.bias")
  pos = take("embeddings.position_embeddings")[0]  # [1 + N, D]
  side = hf_config["image_size"] // hf_config["patch_size"]
  out[IMAGE + "pos_embed"] = pos[1:].reshape(side, side, width)
  out[IMAGE + "cls"] = take("embeddings.cls_token")[0, 0] + pos[0]
  out[IMAGE + "type_embed"] = np.zeros(width, np.float32)
  for i in range(hf_config["num_hidden_layers"]):
    layout.block(take, f"encoder.layer.{i}.", LAYER.format(i=i), heads, NAMES, out)
  out["encoder/norm/scale"] = take("layernorm.weight")
  out["encoder/norm/bias"] = take("layernorm.bias")
  out |= {prefix + k: np.asarray(v) for k, v in t.items() if k not in used}
  notes = [f"{IMAGE}cls: the class token plus its position (position_embeddings[0])",
           f"{IMAGE}type_embed: zeros (ViT has no modality vector)"]
  grid = tuple(target_shapes.get(IMAGE + "pos_embed", (side, side))[:2])
  if grid != (side, side):  # Another image size: resized as transformers does on the fly.
    out[IMAGE + "pos_embed"] = layout.resize_bicubic(out[IMAGE + "pos_embed"], *grid)
    notes.append(f"{IMAGE}pos_embed: the checkpoint's {side}x{side} grid resized to "
                 f"{grid[0]}x{grid[1]} (bicubic, as ViTModel's interpolate_pos_encoding)")
  return out, notes



def image_tower(model_cfg):
  """The name prefix of the image encoder: the shared encoder or the image tower."""
  return "encoders/image/" if model_cfg.get("towers") == "separate" else "encoder/"


def image_positions(p, width, grid, fold_bias):
  """([rows, cols], [rows * cols, D]) of the image tokens' positions with the modality vector
  (and the patch bias, `fold_bias`: for a format without one) folded in, as mmjax adds them
  to every patch. Sin-cos positions (no table in `p`) are written out for `grid` (rows, cols)."""
  from mmjax.models import posemb  # pylint: disable=g-import-not-at-top
  table = p.get(IMAGE + "pos_embed")
  if table is None:
    if grid is None:
      raise UserError("This model's image positions are sin-cos, computed for the input's patch "
                      "grid: give the image size (--image_size) to write them out.")
    table = np.asarray(posemb.sincos_2d(*grid, width), np.float32)
  else:
    grid = table.shape[:2]
  pos = np.asarray(table, np.float32).reshape(-1, width) + p[IMAGE + "type_embed"]
  return tuple(grid), pos + p[IMAGE + "patch_embed/bias"] if fold_bias else pos


def export_problems(model_cfg, settings, what):
  """UserError naming the config keys of a model that format `what` cannot express."""
  problems = layout.settings_problems(model_cfg, settings)
  if problems:
    raise UserError(f"{what} cannot express this model exactly; it needs config.model."
                    + "\n  ".join([""] + problems))


def from_mmjax(params, model_cfg, image_size=None):
  """(config.json dict, {HF name: array}) of a ViTModel (no pooler) equal to the image tower
  in `params` ({mmjax name: float32 array}, one entry per layer); `image_size` (H, W) for
  sin-cos positions. The model needs ViT's architecture: pre-LN blocks, a class token, no
  LayerNorm before the encoder."""
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  export_problems(model_cfg, {"block": "pre_ln"}, "A ViTModel")
  for key in ("cls_token", "ln_pre_off"):
    if "image" not in tuple(model_cfg.get(key, ())):
      raise UserError(f"A ViTModel cannot express this model exactly: it needs 'image' in "
                      f"config.model.{key} (it has {tuple(model_cfg.get(key, ()))}).")
  size, p = sizes.of(model_cfg, "image"), params
  width, enc = size.width, image_tower(model_cfg)
  patch, channels = model_cfg.image.patch_size, p[IMAGE + "patch_embed/kernel"].shape[0]
  channels //= patch * patch
  grid = None if image_size is None else (image_size[0] // patch, image_size[1] // patch)
  grid, pos = image_positions(p, width, grid, fold_bias=False)
  act = layout.HIDDEN_ACT[model_cfg.get("gelu", "tanh")]
  hf_config = {
      "architectures": ["ViTModel"], "model_type": "vit", "hidden_size": width,
      "num_hidden_layers": size.depth, "num_attention_heads": size.num_heads,
      "intermediate_size": size.mlp_dim, "hidden_act": act,
      "layer_norm_eps": float(model_cfg.get("ln_eps")),
      "image_size": grid[0] * patch if grid[0] == grid[1] else [g * patch for g in grid],
      "patch_size": patch, "num_channels": channels, "qkv_bias": True,
      "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
      "initializer_range": 0.02}
  t = {"embeddings.cls_token": p[IMAGE + "cls"].reshape(1, 1, width),
       "embeddings.position_embeddings": np.concatenate(
           [np.zeros((1, width), np.float32), pos])[None],
       "embeddings.patch_embeddings.projection.weight": layout.patch_conv(
           p[IMAGE + "patch_embed/kernel"], channels),
       "embeddings.patch_embeddings.projection.bias": p[IMAGE + "patch_embed/bias"],
       "layernorm.weight": p[enc + "norm/scale"], "layernorm.bias": p[enc + "norm/bias"]}
  for i in range(size.depth):
    layout.unblock(p, f"{enc}blocks/blocks/{i}/", f"encoder.layer.{i}.", NAMES, t)
  return hf_config, t
