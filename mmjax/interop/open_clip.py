"""OpenAI CLIP / open_clip state dicts (ViT towers; the layout OpenAI released and open_clip
keeps) -> mmjax towers, the same model as mmjax.interop.clip builds from transformers'
CLIPModel. config.init_from='open_clip:<file.safetensors>'.

  OpenAI / open_clip                               mmjax
  visual.conv1 (no bias)                           tokenizers/image/patch_embed (bias: zeros)
  visual.class_embedding + positional_embedding[0] tokenizers/image/cls
  visual.positional_embedding[1:]                  tokenizers/image/pos_embed [rows, cols, D]
  visual.ln_pre                                    tokenizers/image/norm
  visual.transformer.resblocks.<i>                 encoders/image/blocks/blocks/<i>
  visual.ln_post, visual.proj ([in, out])          encoders/image/norm, projections/image/proj
  token_embedding, positional_embedding            tokenizers/text/token_embed, pos_embed
  transformer.resblocks.<i>, ln_final              encoders/text/...
  text_projection ([in, out]), logit_scale         projections/text/proj, logit_scale/image_text
  (a block: ln_1 -> norm1, attn.in_proj_weight / bias -> attn/qkv, attn.out_proj -> attn/out,
  ln_2 -> norm2, mlp.c_fc / c_proj -> mlp/fc1 / fc2)

A state dict has no config. Shapes come from the tensors; the head counts and the GELU from
`open_clip_config.json` beside the file when it is there (open_clip's hub folders have one:
model_cfg.quick_gelu, vision_cfg.width / head_width, text_cfg.heads), else heads = width / 64
(OpenAI's build_model) and the GELU is what config.model.gelu says (OpenAI's weights: quick; the
file cannot tell, and the import notes it). Text is pooled at the end-of-text token, as mmjax's
'eot' pools the last valid token: text rows must end in it (OpenAI's tokenizer does). Read with
safetensors (no torch): a .pt / .bin pickle must be saved as .safetensors first.
"""
import json
import os
import re

import numpy as np

from mmjax.errors import UserError
from mmjax.interop import clip
from mmjax.interop import layout

CONFIG_FILE = "open_clip_config.json"
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.")


def read(path):
  """{name: float32 array} of an OpenAI / open_clip state dict in a .safetensors file."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise UserError(f"config.init_from=open_clip:{path}: no such file.")
  try:
    tensors = load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"config.init_from=open_clip:{path}: not a .safetensors state dict ({e}); "
                    "save a .pt / .bin state dict with safetensors.torch.save_file.") from None
  return {k.removeprefix("module."): np.asarray(v, np.float32) for k, v in tensors.items()}


def _open_clip_config(path):
  config_path = os.path.join(os.path.dirname(path), CONFIG_FILE)
  if not os.path.isfile(config_path):
    return None
  with open(config_path, encoding="utf-8") as f:
    return json.load(f).get("model_cfg", {})


def hf_like_config(t, path, gelu=None):
  """The state dict's architecture in the shape of a CLIPModel's config.json. `gelu` ('exact'
  / 'quick' / 'tanh'): the config's, used when no open_clip_config.json says."""
  needed = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
            "visual.proj", "token_embedding.weight", "positional_embedding", "text_projection",
            "ln_final.weight", "logit_scale")
  missing = [k for k in needed if k not in t]
  if missing:
    raise UserError(f"config.init_from=open_clip:{path} lacks {missing}: mmjax imports CLIPs "
                    "with ViT image towers in OpenAI's / open_clip's layout.")
  cfg = _open_clip_config(path)
  depth = lambda prefix: 1 + max(int(m[2]) for k in t if (m := _BLOCK.match(k))
                                 and (m[1] or "") == prefix)
  v_width, t_width = t["visual.conv1.weight"].shape[0], t["ln_final.weight"].shape[0]
  if cfg is not None:
    v_heads = v_width // cfg.get("vision_cfg", {}).get("head_width", 64)
    t_heads = cfg.get("text_cfg", {}).get("heads", 8)
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
  else:
    if v_width % 64 or t_width % 64:
      raise UserError(f"config.init_from=open_clip:{path}: no {CONFIG_FILE} beside it, and its "
                      f"widths ({v_width}, {t_width}) are not multiples of 64 (OpenAI's rule, "
                      f"heads = width / 64): put its {CONFIG_FILE} there for the head counts.")
    v_heads, t_heads = v_width // 64, t_width // 64
    act = layout.HIDDEN_ACT.get(gelu, "quick_gelu")
  patch = t["visual.conv1.weight"].shape[-1]
  side = int(round((t["visual.positional_embedding"].shape[0] - 1) ** 0.5))
  tower = lambda prefix, width, heads: {
      "hidden_size": width, "num_attention_heads": heads, "num_hidden_layers": depth(prefix),
      "intermediate_size": t[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
      "hidden_act": act, "layer_norm_eps": 1e-5}
  return {"model_type": "clip", "projection_dim": t["visual.proj"].shape[1],
          "vision_config": tower("visual.", v_width, v_heads) | {
              "image_size": side * patch, "patch_size": patch,
              "num_channels": t["visual.conv1.weight"].shape[1]},
          "text_config": tower("", t_width, t_heads) | {
              "vocab_size": t["token_embedding.weight"].shape[0],
              "max_position_embeddings": t["positional_embedding"].shape[0]},
          "_gelu_known": cfg is not None}


def _block(take, src, dst, heads, out):
  in_w, in_b = take(src + "attn.in_proj_weight"), take(src + "attn.in_proj_bias")
  out[dst + "attn/qkv/kernel"], out[dst + "attn/qkv/bias"] = layout.fuse_qkv(
      np.split(in_w, 3), np.split(in_b, 3), heads)
  out[dst + "attn/out/kernel"] = layout.out_in(take(src + "attn.out_proj.weight"), heads)
  out[dst + "attn/out/bias"] = take(src + "attn.out_proj.bias")
  for role, name in (("norm1", "ln_1"), ("norm2", "ln_2")):
    out[f"{dst}{role}/scale"], out[f"{dst}{role}/bias"] = (take(f"{src}{name}.weight"),
                                                           take(f"{src}{name}.bias"))
  for role, name in (("fc1", "c_fc"), ("fc2", "c_proj")):
    out[f"{dst}mlp/{role}/kernel"] = layout.linear_in(take(f"{src}mlp.{name}.weight"))
    out[f"{dst}mlp/{role}/bias"] = take(f"{src}mlp.{name}.bias")


def to_mmjax(t, hf_config, target_shapes):
  """({mmjax name: array}, notes) of a state dict (`read`) of architecture `hf_config`."""
  used = set()

  def take(name):
    used.add(name)
    return t[name]

  vision, text = hf_config["vision_config"], hf_config["text_config"]
  width, side = vision["hidden_size"], vision["image_size"] // vision["patch_size"]
  out = {"tokenizers/image/patch_embed/kernel": np.ascontiguousarray(
      take("visual.conv1.weight").transpose(2, 3, 1, 0).reshape(-1, width)),
         "tokenizers/image/patch_embed/bias": np.zeros(width, np.float32)}
  pos = take("visual.positional_embedding")
  out["tokenizers/image/pos_embed"] = pos[1:].reshape(side, side, width)
  out["tokenizers/image/cls"] = take("visual.class_embedding") + pos[0]
  out["tokenizers/image/norm/scale"] = take("visual.ln_pre.weight")
  out["tokenizers/image/norm/bias"] = take("visual.ln_pre.bias")
  for prefix, m, cfg in (("visual.", "image", vision), ("", "text", text)):
    for i in range(cfg["num_hidden_layers"]):
      _block(take, f"{prefix}transformer.resblocks.{i}.", f"encoders/{m}/blocks/blocks/{i}/",
             cfg["num_attention_heads"], out)
  out["encoders/image/norm/scale"] = take("visual.ln_post.weight")
  out["encoders/image/norm/bias"] = take("visual.ln_post.bias")
  out["projections/image/proj/kernel"] = take("visual.proj")
  text_len = target_shapes["tokenizers/text/pos_embed"][0]
  out["tokenizers/text/token_embed/embedding"] = take("token_embedding.weight")
  out["tokenizers/text/pos_embed"] = take("positional_embedding")[:text_len]
  out["encoders/text/norm/scale"] = take("ln_final.weight")
  out["encoders/text/norm/bias"] = take("ln_final.bias")
  out["projections/text/proj/kernel"] = take("text_projection")
  notes = clip.finish(out, take("logit_scale"), text["hidden_size"], side, target_shapes)
  if not hf_config.get("_gelu_known"):
    notes.append(f"GELU: the file does not say (no {CONFIG_FILE} beside it); the config's is "
                 "used (OpenAI's weights: quick)")
  out |= {k: v for k, v in t.items() if k not in used}
  return out, notes


def from_clip(hf_config, tensors):
  """({state dict name: array}, open_clip_config.json's dict) of the OpenAI / open_clip layout
  equal to a transformers CLIPModel (`tensors`: its model.safetensors): the other direction,
  for open_clip's loaders."""
  text_cfg, vision_cfg = clip.towers(hf_config)
  t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  v, x, out = "vision_model.", "text_model.", {}
  pos = t[v + "embeddings.position_embedding.weight"]
  out["visual.conv1.weight"] = t[v + "embeddings.patch_embedding.weight"]
  out["visual.class_embedding"] = t[v + "embeddings.class_embedding"]
  out["visual.positional_embedding"] = pos
  out["visual.ln_pre.weight"], out["visual.ln_pre.bias"] = (t[v + "pre_layrnorm.weight"],
                                                            t[v + "pre_layrnorm.bias"])
  for hf, prefix, cfg in ((v, "visual.", vision_cfg), (x, "", text_cfg)):
    for i in range(cfg["num_hidden_layers"]):
      src, dst = f"{hf}encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
      out[dst + "attn.in_proj_weight"] = np.concatenate(
          [t[f"{src}self_attn.{n}_proj.weight"] for n in "qkv"])
      out[dst + "attn.in_proj_bias"] = np.concatenate(
          [t[f"{src}self_attn.{n}_proj.bias"] for n in "qkv"])
      for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                           ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                           ("mlp.c_proj", "mlp.fc2")):
        out[f"{dst}{ours}.weight"] = t[f"{src}{theirs}.weight"]
        out[f"{dst}{ours}.bias"] = t[f"{src}{theirs}.bias"]
  out["visual.ln_post.weight"], out["visual.ln_post.bias"] = (t[v + "post_layernorm.weight"],
                                                              t[v + "post_layernorm.bias"])
  out["visual.proj"] = layout.linear_in(t["visual_projection.weight"])
  out["token_embedding.weight"] = t[x + "embeddings.token_embedding.weight"]
  out["positional_embedding"] = t[x + "embeddings.position_embedding.weight"]
  out["ln_final.weight"], out["ln_final.bias"] = (t[x + "final_layer_norm.weight"],
                                                  t[x + "final_layer_norm.bias"])
  out["text_projection"] = layout.linear_in(t["text_projection.weight"])
  out["logit_scale"] = t["logit_scale"].reshape(())
  model_cfg = {
      "embed_dim": hf_config["projection_dim"],
      "quick_gelu": vision_cfg.get("hidden_act", "quick_gelu") == "quick_gelu",
      "vision_cfg": {"image_size": vision_cfg["image_size"], "patch_size": vision_cfg["patch_size"],
                     "width": vision_cfg["hidden_size"], "layers": vision_cfg["num_hidden_layers"],
                     "head_width": vision_cfg["hidden_size"] // vision_cfg["num_attention_heads"],
                     "mlp_ratio": vision_cfg["intermediate_size"] / vision_cfg["hidden_size"]},
      "text_cfg": {"context_length": text_cfg["max_position_embeddings"],
                   "vocab_size": text_cfg["vocab_size"], "width": text_cfg["hidden_size"],
                   "heads": text_cfg["num_attention_heads"],
                   "layers": text_cfg["num_hidden_layers"],
                   "mlp_ratio": text_cfg["intermediate_size"] / text_cfg["hidden_size"]}}
  return ({k: np.ascontiguousarray(val) for k, val in out.items()}, {"model_cfg": model_cfg})
