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
valid token, so text rows must end in CLIP's end-of-text token (its tokenizer's rows do). mmjax
towers share one shape: a checkpoint whose text and vision towers differ in width or depth (every
released CLIP) is refused for now.
"""
import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout

MODEL_TYPES = ("clip",)
GELU = {"gelu": "exact", "quick_gelu": "quick", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "hidden_act", "layer_norm_eps")


def towers(hf_config):
  text, vision = hf_config["text_config"], hf_config["vision_config"]
  differ = [k for k in SHAPE if text.get(k) != vision.get(k)]
  if differ:
    raise UserError("This CLIP's text and vision towers differ in "
                    f"{', '.join(f'{k} ({text.get(k)} / {vision.get(k)})' for k in differ)}: "
                    "mmjax's towers share one shape (config.model.encoder), not yet one each.")
  return text, vision


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  text, vision = towers(hf_config)
  act = vision.get("hidden_act", "quick_gelu")
  if act not in GELU:
    raise UserError(f"hidden_act={act!r} in the checkpoint's config.json: mmjax has "
                    f"{sorted(GELU)}.")
  return {"towers": "separate", "block": "pre_ln", "gelu": GELU[act],
          "ln_eps": float(vision.get("layer_norm_eps", 1e-5)),
          "encoder.width": vision["hidden_size"], "encoder.depth": vision["num_hidden_layers"],
          "encoder.num_heads": vision["num_attention_heads"],
          "encoder.mlp_dim": vision["intermediate_size"], "cls_token": ("image",),
          "causal": ("text",), "pool": "image=cls,text=eot", "ln_pre_off": ("text",),
          "proj_norm": False, "embed_dim": hf_config["projection_dim"],
          "image.patch_size": vision["patch_size"], "image.pos_embed": "learned"}


def check_pair(kind, settings, hf_config, model_cfg, info, where):
  """UserError listing what config and data lack for an image-text checkpoint (`kind`: its
  name) whose architecture `settings` builds."""
  missing = [m for m in ("image", "text") if m not in info.modalities]
  if missing:
    raise UserError(f"config.init_from=hf:{where} is a {kind} (image and text); dataset "
                    f"{info.name!r} lacks {missing}.")
  problems = layout.config_problems(model_cfg, settings)
  text = hf_config["text_config"]
  if info.vocab_size != text["vocab_size"]:
    problems.append(f"a vocab of {text['vocab_size']} tokens, {kind}'s (the data's has "
                    f"{info.vocab_size})")
  if info.shapes["text_ids"][0] > text["max_position_embeddings"]:
    problems.append(f"--config.data.text_len={text['max_position_embeddings']} or less")
  if problems:
    raise UserError(f"config.init_from=hf:{where} is a {kind} that this config does not "
                    "build; set:\n  " + "\n  ".join(problems))


def check(hf_config, model_cfg, info, where):
  """UserError listing every config key that differs from the checkpoint's architecture."""
  check_pair("CLIP", model_config(hf_config), hf_config, model_cfg, info, where)


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
  embed = out["projections/text/proj/kernel"].shape[1]
  for m in ("image", "text"):
    out[f"tokenizers/{m}/type_embed"] = np.zeros(width, np.float32)
    out[f"projections/{m}/proj/bias"] = np.zeros(embed, np.float32)
  out["logit_scale/image_text"] = take("logit_scale").reshape(())
  grid = tuple(target_shapes.get("tokenizers/image/pos_embed", (side, side))[:2])
  notes = ["tokenizers/image/cls: the class embedding plus its position",
           "patch embedding and projection biases, modality vectors: zeros (CLIP has none)"]
  if grid != (side, side):
    out["tokenizers/image/pos_embed"] = layout.resize_bicubic(
        out["tokenizers/image/pos_embed"], *grid)
    notes.append(f"tokenizers/image/pos_embed: {side}x{side} resized to {grid[0]}x{grid[1]}")
  out |= {k: np.asarray(val) for k, val in t.items() if k not in used}
  return out, notes
