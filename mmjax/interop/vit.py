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
GELU = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "quick_gelu": "quick"}
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
  if act not in GELU:
    raise UserError(f"hidden_act={act!r} in the checkpoint's config.json: mmjax has "
                    f"{sorted(GELU)}.")
  if not hf_config.get("qkv_bias", True):
    raise UserError("qkv_bias=false in the checkpoint's config.json: mmjax's attention has "
                    "q/k/v biases (they would import as zeros, but the export would not be "
                    "this architecture).")
  return {"block": "pre_ln", "ln_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
          "gelu": GELU[act], "encoder.width": hf_config["hidden_size"],
          "encoder.depth": hf_config["num_hidden_layers"],
          "encoder.num_heads": hf_config["num_attention_heads"],
          "encoder.mlp_dim": hf_config["intermediate_size"], "cls_token": ("image",), "pool": "image=cls",
          "ln_pre_off": ("image",), "image.patch_size": hf_config["patch_size"],
          "image.pos_embed": "learned"}


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  if "image" not in info.modalities:
    raise UserError(f"config.init_from=hf:{where} is an image encoder; dataset {info.name!r} "
                    f"has {list(info.modalities)}.")
  problems = layout.config_problems(model_cfg, model_config(hf_config))
  channels = info.shapes["image"][-1]
  if channels != hf_config.get("num_channels", 3):
    problems.append(f"images with {hf_config.get('num_channels', 3)} channels (the data has "
                    f"{channels})")
  if problems:
    raise UserError(f"config.init_from=hf:{where} is a ViT that this config does not build; "
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
