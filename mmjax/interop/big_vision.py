"""big_vision SigLIP checkpoints (`.npz` of a `proj.image_text.two_towers` model: a `vit` image
tower pooled by its MAP head, a `text_transformer` text tower with its head, `t` and `b`) ->
mmjax towers, the same model as mmjax.interop.siglip builds from transformers' SiglipModel.

  big_vision (npz keys, '/'-joined; a leading 'params/' is dropped)   mmjax
  img/embedding (Conv [p, p, C, D], bias)          tokenizers/image/patch_embed
  img/pos_embedding [1, N, D]                      tokenizers/image/pos_embed [rows, cols, D]
  img/Transformer/encoderblock_<i>                 encoders/image/blocks/blocks/<i>
  img/Transformer/encoder_norm                     encoders/image/norm
  img/MAPHead_0 (probe, attention, LayerNorm, MLP) pool_heads/image
  txt/Embed_0, txt/pos_embedding                   tokenizers/text/token_embed, pos_embed
  txt/Encoder_0/encoderblock_<i>, encoder_norm     encoders/text/...
  txt/head                                         projections/text/proj
  t, b                                             logit_scale/image_text, logit_bias/image_text
  (a block: LayerNorm_0 -> norm1, MultiHeadDotProductAttention_0/query|key|value -> attn/qkv,
  .../out -> attn/out, LayerNorm_1 -> norm2, MlpBlock_0/Dense_0|Dense_1 -> mlp/fc1|fc2;
  scanned checkpoints, 'encoderblock' with a leading layer axis, are unstacked)

The architecture comes from the tensors (an npz has no config): widths, depths, heads, MLP
sizes, patch size, grid, vocabulary and text length. big_vision's blocks are flax's: tanh GELU,
LayerNorm epsilon 1e-6. Its texts are read as SigLIP's (rows filled, the last position pooled).
"""
import re

import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout

_BLOCK = re.compile(r"^(img/Transformer|txt/Encoder_0)/encoderblock_(\d+)/")


class _Taken(dict):
  """The checkpoint's tensors, remembering which were read (the rest is reported unused)."""

  def __init__(self, tensors):
    super().__init__(tensors)
    self.used = set()

  def __getitem__(self, key):
    self.used.add(key)
    return super().__getitem__(key)


def read(path):
  """{name: float32 array} of a big_vision .npz, scanned blocks unstacked."""
  try:
    with np.load(path, allow_pickle=False) as f:
      raw = {k: np.asarray(f[k]) for k in f.files}
  except (OSError, ValueError) as e:
    raise UserError(f"config.init_from=big_vision:{path}: not a readable .npz ({e}).") from None
  out = {}
  for key, value in raw.items():
    key = key.removeprefix("params/")
    m = re.match(r"^(img/Transformer|txt/Encoder_0)/encoderblock/(.+)$", key)
    if m:  # Scanned: a leading layer axis.
      out |= {f"{m[1]}/encoderblock_{i}/{m[2]}": v for i, v in enumerate(value)}
    else:
      out[key] = value
  return out


def _depth(t, tower):
  return 1 + max((int(m[2]) for k in t if (m := _BLOCK.match(k)) and m[1] == tower),
                 default=-1)


def _shape(t, tower):
  """{HF-style shape key: value} of one tower, from its first block's tensors."""
  q = t.get(f"{tower}/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel")
  if q is None:
    raise UserError(f"The checkpoint has no {tower}/encoderblock_0: it is not a big_vision "
                    "SigLIP (two_towers with vit and text_transformer).")
  return {"hidden_size": q.shape[0], "num_attention_heads": q.shape[1],
          "num_hidden_layers": _depth(t, tower),
          "intermediate_size": t[f"{tower}/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1],
          "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}


def hf_like_config(t):
  """The checkpoint's architecture in the shape of a SiglipModel's config.json."""
  missing = [k for k in ("img/embedding/kernel", "img/pos_embedding", "img/MAPHead_0/probe",
                         "txt/Embed_0/embedding", "txt/pos_embedding", "txt/head/kernel", "t",
                         "b") if k not in t]
  if missing:
    raise UserError(f"The checkpoint lacks {missing}: mmjax imports big_vision SigLIPs "
                    "(image pool_type='map', a text head, a logit bias).")
  vision, text = _shape(t, "img/Transformer"), _shape(t, "txt/Encoder_0")
  patch = t["img/embedding/kernel"].shape[0]
  side = int(round(t["img/pos_embedding"].shape[1] ** 0.5))
  vision |= {"patch_size": patch, "image_size": side * patch,
             "num_channels": t["img/embedding/kernel"].shape[2]}
  text |= {"vocab_size": t["txt/Embed_0/embedding"].shape[0],
           "max_position_embeddings": t["txt/pos_embedding"].shape[1],
           "projection_size": t["txt/head/kernel"].shape[1]}
  return {"model_type": "siglip", "vision_config": vision, "text_config": text}


def _block(t, src, dst, out):
  """One big_vision (flax) block -> mmjax's: the kernels are already [in, out]."""
  a = src + "MultiHeadDotProductAttention_0/"
  q, k, v = (t[f"{a}{n}/kernel"] for n in ("query", "key", "value"))
  out[dst + "attn/qkv/kernel"] = np.stack([q, k, v], 1)
  out[dst + "attn/qkv/bias"] = np.stack([t[f"{a}{n}/bias"] for n in ("query", "key", "value")])
  out[dst + "attn/out/kernel"], out[dst + "attn/out/bias"] = t[a + "out/kernel"], t[a + "out/bias"]
  for i, role in enumerate(("norm1", "norm2")):
    out[f"{dst}{role}/scale"] = t[f"{src}LayerNorm_{i}/scale"]
    out[f"{dst}{role}/bias"] = t[f"{src}LayerNorm_{i}/bias"]
  for i, role in enumerate(("fc1", "fc2")):
    out[f"{dst}mlp/{role}/kernel"] = t[f"{src}MlpBlock_0/Dense_{i}/kernel"]
    out[f"{dst}mlp/{role}/bias"] = t[f"{src}MlpBlock_0/Dense_{i}/bias"]


def to_mmjax(t, target_shapes):
  """({mmjax name: array}, notes) of a big_vision SigLIP's tensors (`read`)."""
  t = _Taken(t)
  hf_config = hf_like_config(t)
  vision, text = hf_config["vision_config"], hf_config["text_config"]
  out = {}
  width, side = vision["hidden_size"], vision["image_size"] // vision["patch_size"]
  out["tokenizers/image/patch_embed/kernel"] = t["img/embedding/kernel"].reshape(-1, width)
  out["tokenizers/image/patch_embed/bias"] = t["img/embedding/bias"]
  pos = t["img/pos_embedding"][0].reshape(side, side, width)
  grid = tuple(target_shapes.get("tokenizers/image/pos_embed", (side, side))[:2])
  out["tokenizers/image/pos_embed"] = (pos if grid == (side, side)
                                       else layout.resize_bicubic(pos, *grid))
  for tower, m, cfg in (("img/Transformer", "image", vision), ("txt/Encoder_0", "text", text)):
    for i in range(cfg["num_hidden_layers"]):
      _block(t, f"{tower}/encoderblock_{i}/", f"encoders/{m}/blocks/blocks/{i}/", out)
    out[f"encoders/{m}/norm/scale"] = t[f"{tower}/encoder_norm/scale"]
    out[f"encoders/{m}/norm/bias"] = t[f"{tower}/encoder_norm/bias"]
  h, p = "img/MAPHead_0/", "pool_heads/image/"
  a = h + "MultiHeadDotProductAttention_0/"
  out[p + "probe"] = t[h + "probe"].reshape(width)
  out[p + "q/kernel"], out[p + "q/bias"] = t[a + "query/kernel"], t[a + "query/bias"]
  out[p + "kv/kernel"] = np.stack([t[a + "key/kernel"], t[a + "value/kernel"]], 1)
  out[p + "kv/bias"] = np.stack([t[a + "key/bias"], t[a + "value/bias"]])
  out[p + "out/kernel"], out[p + "out/bias"] = t[a + "out/kernel"], t[a + "out/bias"]
  out[p + "norm/scale"], out[p + "norm/bias"] = t[h + "LayerNorm_0/scale"], t[h + "LayerNorm_0/bias"]
  for i, role in enumerate(("fc1", "fc2")):
    out[f"{p}mlp/{role}/kernel"] = t[f"{h}MlpBlock_0/Dense_{i}/kernel"]
    out[f"{p}mlp/{role}/bias"] = t[f"{h}MlpBlock_0/Dense_{i}/bias"]
  out["projections/image/proj/kernel"] = np.eye(width, dtype=np.float32)
  out["projections/image/proj/bias"] = np.zeros(width, np.float32)
  text_len = target_shapes["tokenizers/text/pos_embed"][0]
  out["tokenizers/text/token_embed/embedding"] = t["txt/Embed_0/embedding"]
  out["tokenizers/text/pos_embed"] = t["txt/pos_embedding"][0][:text_len]
  out["projections/text/proj/kernel"] = t["txt/head/kernel"]
  out["projections/text/proj/bias"] = t["txt/head/bias"]
  for m, w in (("image", width), ("text", text["hidden_size"])):
    out[f"tokenizers/{m}/type_embed"] = np.zeros(w, np.float32)
  out["logit_scale/image_text"] = t["t"].reshape(())
  out["logit_bias/image_text"] = t["b"].reshape(())
  out |= {k: v for k, v in t.items() if k not in t.used}
  notes = ["projections/image/proj: the identity (the image embedding is the MAP head's output)",
           "modality vectors: zeros (SigLIP has none)"]
  if grid != (side, side):
    notes.append(f"tokenizers/image/pos_embed: {side}x{side} resized to {grid[0]}x{grid[1]}")
  return {k: np.asarray(v, np.float32) for k, v in out.items()}, notes


def _hf_block(t, src, dst, heads, out):
  """One SiglipModel layer's tensors (HF names under `src`) -> big_vision's (under `dst`)."""
  a, ln = dst + "MultiHeadDotProductAttention_0/", dst + "LayerNorm_"
  for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    weight = t[f"{src}self_attn.{hf}.weight"]
    out[f"{a}{name}/kernel"] = layout.linear_in(weight).reshape(weight.shape[1], heads, -1)
    out[f"{a}{name}/bias"] = t[f"{src}self_attn.{hf}.bias"].reshape(heads, -1)
  out[a + "out/kernel"] = layout.out_in(t[f"{src}self_attn.out_proj.weight"], heads)
  out[a + "out/bias"] = t[f"{src}self_attn.out_proj.bias"]
  for i, hf in enumerate(("layer_norm1", "layer_norm2")):
    out[f"{ln}{i}/scale"], out[f"{ln}{i}/bias"] = t[f"{src}{hf}.weight"], t[f"{src}{hf}.bias"]
  for i, hf in enumerate(("fc1", "fc2")):
    out[f"{dst}MlpBlock_0/Dense_{i}/kernel"] = layout.linear_in(t[f"{src}mlp.{hf}.weight"])
    out[f"{dst}MlpBlock_0/Dense_{i}/bias"] = t[f"{src}mlp.{hf}.bias"]


def from_siglip(hf_config, tensors):
  """{npz key: array} of a big_vision two_towers SigLIP equal to a transformers SiglipModel
  (`tensors`: its model.safetensors; `hf_config`: its config.json): the other direction of
  this module, for big_vision's `load` (keys under 'params/')."""
  text_cfg, vision_cfg = hf_config["text_config"], hf_config["vision_config"]
  t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  v, x, out = "vision_model.", "text_model.", {}
  out["img/embedding/kernel"] = t[v + "embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
  out["img/embedding/bias"] = t[v + "embeddings.patch_embedding.bias"]
  out["img/pos_embedding"] = t[v + "embeddings.position_embedding.weight"][None]
  for hf, bv, cfg in ((v, "img/Transformer", vision_cfg), (x, "txt/Encoder_0", text_cfg)):
    for i in range(cfg["num_hidden_layers"]):
      _hf_block(t, f"{hf}encoder.layers.{i}.", f"{bv}/encoderblock_{i}/",
                cfg["num_attention_heads"], out)
  out["img/Transformer/encoder_norm/scale"] = t[v + "post_layernorm.weight"]
  out["img/Transformer/encoder_norm/bias"] = t[v + "post_layernorm.bias"]
  h, m = v + "head.", "img/MAPHead_0/"
  width, heads = vision_cfg["hidden_size"], vision_cfg["num_attention_heads"]
  out[m + "probe"] = t[h + "probe"].reshape(1, 1, width)
  in_w, in_b = t[h + "attention.in_proj_weight"], t[h + "attention.in_proj_bias"]
  for j, name in enumerate(("query", "key", "value")):
    rows = slice(j * width, (j + 1) * width)
    out[f"{m}MultiHeadDotProductAttention_0/{name}/kernel"] = layout.linear_in(
        in_w[rows]).reshape(width, heads, -1)
    out[f"{m}MultiHeadDotProductAttention_0/{name}/bias"] = in_b[rows].reshape(heads, -1)
  out[m + "MultiHeadDotProductAttention_0/out/kernel"] = layout.out_in(
      t[h + "attention.out_proj.weight"], heads)
  out[m + "MultiHeadDotProductAttention_0/out/bias"] = t[h + "attention.out_proj.bias"]
  out[m + "LayerNorm_0/scale"], out[m + "LayerNorm_0/bias"] = (t[h + "layernorm.weight"],
                                                              t[h + "layernorm.bias"])
  for i, hf in enumerate(("fc1", "fc2")):
    out[f"{m}MlpBlock_0/Dense_{i}/kernel"] = layout.linear_in(t[f"{h}mlp.{hf}.weight"])
    out[f"{m}MlpBlock_0/Dense_{i}/bias"] = t[f"{h}mlp.{hf}.bias"]
  out["txt/Embed_0/embedding"] = t[x + "embeddings.token_embedding.weight"]
  out["txt/pos_embedding"] = t[x + "embeddings.position_embedding.weight"][None]
  out["txt/Encoder_0/encoder_norm/scale"] = t[x + "final_layer_norm.weight"]
  out["txt/Encoder_0/encoder_norm/bias"] = t[x + "final_layer_norm.bias"]
  out["txt/head/kernel"] = layout.linear_in(t[x + "head.weight"])
  out["txt/head/bias"] = t[x + "head.bias"]
  out["t"], out["b"] = t["logit_scale"].reshape(1), t["logit_bias"].reshape(1)
  return {"params/" + k: np.ascontiguousarray(val) for k, val in out.items()}
