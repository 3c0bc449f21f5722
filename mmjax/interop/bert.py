"""HF transformers BERT-family text encoders (`BertModel`: BERT, MiniLM, ...) <-> an mmjax
text tower: the text tokenizer and the encoder, with config.model.block='post_ln' and the
checkpoint's width, depth, heads, MLP width, LayerNorm epsilon and GELU (`model_config`).

  HF BertModel                                   mmjax
  embeddings.word_embeddings                     tokenizers/text/token_embed/embedding
  embeddings.position_embeddings                 tokenizers/text/pos_embed (first text_len rows)
  embeddings.token_type_embeddings, row 0        tokenizers/text/type_embed
  embeddings.LayerNorm                           tokenizers/text/norm
  encoder.layer.<i>.attention.self.query/key/value   encoder/blocks/blocks/<i>/attn/qkv (fused)
  encoder.layer.<i>.attention.output.dense       encoder/blocks/blocks/<i>/attn/out
  encoder.layer.<i>.attention.output.LayerNorm   encoder/blocks/blocks/<i>/norm1
  encoder.layer.<i>.intermediate.dense           encoder/blocks/blocks/<i>/mlp/fc1
  encoder.layer.<i>.output.dense                 encoder/blocks/blocks/<i>/mlp/fc2
  encoder.layer.<i>.output.LayerNorm             encoder/blocks/blocks/<i>/norm2

(with scan_layers, the layers are stacked on a leading axis of encoder/blocks/blocks/...).

Not imported, and reported unused: token type 1 (the second segment of sentence pairs: mmjax
texts are one segment), the pooler (mmjax pools by mean, or by a head of its own) and a
pretraining head (`cls.*`). Exported: token type 1 as zeros and the pooler as the identity
map (tanh of the [CLS] state), so that transformers loads the folder with nothing missing;
they do not change the token states or their mean.
"""
import os

import numpy as np

from mmjax.errors import UserError
from mmjax.interop import layout

MODEL_TYPES = ("bert",)
# HF hidden_act -> config.model.gelu, and back.
LAYER = "encoder/blocks/blocks/{i}/"
TEXT = "tokenizers/text/"
# A layer's tensors by layout.BLOCK_ROLES.
NAMES = ("attention.self.query", "attention.self.key", "attention.self.value",
         "attention.output.dense", "attention.output.LayerNorm", "output.LayerNorm",
         "intermediate.dense", "output.dense")


def model_config(hf_config):
  """{dotted config.model key: value} that build this checkpoint's architecture in mmjax."""
  act = hf_config.get("hidden_act", "gelu")
  if hf_config.get("position_embedding_type", "absolute") != "absolute":
    raise UserError("position_embedding_type="
                    f"{hf_config['position_embedding_type']!r} in the checkpoint's config.json: "
                    "mmjax has learned absolute positions only.")
  return {"block": "post_ln", "ln_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
          "gelu": layout.gelu(act), "encoder.width": hf_config["hidden_size"],
          "encoder.depth": hf_config["num_hidden_layers"],
          "encoder.num_heads": hf_config["num_attention_heads"],
          "encoder.mlp_dim": hf_config["intermediate_size"]}


def check(hf_config, model_cfg, info, where):
  """UserError listing every config.model key (and the vocab) that differs from the
  checkpoint's architecture, with the flags that fix them."""
  problems = layout.config_problems(model_cfg, model_config(hf_config))
  if info.vocab_size != hf_config["vocab_size"]:
    problems.append(f"--config.data.vocab_file={os.path.join(where, 'vocab.txt')} (the data's "
                    f"vocab has {info.vocab_size} tokens, the checkpoint {hf_config['vocab_size']})")
  length = info.shapes["text_ids"][0]
  if length > hf_config["max_position_embeddings"]:
    problems.append(f"--config.data.text_len={hf_config['max_position_embeddings']} or less "
                    f"(now {length}: the checkpoint has that many positions)")
  if problems:
    raise UserError(f"config.init_from=hf:{where} is a {hf_config.get('model_type')} encoder "
                    "that this config does not build; set:\n  " + "\n  ".join(problems))


def to_mmjax(hf_config, tensors, target_shapes):
  """({mmjax name: array}, notes): the checkpoint's tensors (HF names, any 'bert.' prefix) as
  mmjax parameters, one entry per layer, for a model with parameters of `target_shapes`;
  tensors it does not use keep their HF names."""
  text_len = target_shapes[TEXT + "pos_embed"][0]
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  t = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  t |= {k: v for k, v in tensors.items() if not k.startswith(prefix)}
  # Checkpoints from before transformers 4 name LayerNorm parameters gamma / beta.
  t = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                 "LayerNorm.bias"): v
       for k, v in t.items()}
  heads = hf_config["num_attention_heads"]
  out, used = {}, set()

  def take(name):
    if name not in t:
      raise UserError(f"The checkpoint has no tensor {prefix}{name}: it is not a complete "
                      f"{hf_config.get('model_type')} encoder.")
    used.add(name)
    return np.asarray(t[name], np.float32)

  out[TEXT + "token_embed/embedding"] = take("embeddings.word_embeddings.weight")
  positions = take("embeddings.position_embeddings.weight")
  out[TEXT + "pos_embed"] = positions[:text_len]
  out[TEXT + "type_embed"] = take("embeddings.token_type_embeddings.weight")[0]
  out[TEXT + "norm/scale"] = take("embeddings.LayerNorm.weight")
  out[TEXT + "norm/bias"] = take("embeddings.LayerNorm.bias")
  for i in range(hf_config["num_hidden_layers"]):
    layout.block(take, f"encoder.layer.{i}.", LAYER.format(i=i), heads, NAMES, out)
  # What is left is reported unused (under its HF name).
  out |= {prefix + k: np.asarray(v) for k, v in t.items() if k not in used}
  notes = [f"{TEXT}pos_embed: the first {min(text_len, len(positions))} of the checkpoint's "
           f"{len(positions)} positions",
           f"{TEXT}type_embed: token type 0 of {len(t['embeddings.token_type_embeddings.weight'])}"]
  return out, notes


def from_mmjax(params, model_cfg, vocab_size):
  """(config.json dict, {HF name: array}) of a BertModel equal to the mmjax text tower in
  `params` ({mmjax name: array}, one entry per layer)."""
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  if model_cfg.get("block") != "post_ln":
    raise UserError("A BERT checkpoint has post-LN blocks: this model has "
                    f"config.model.block={model_cfg.get('block')!r}, which BertModel cannot "
                    "express.")
  size = sizes.of(model_cfg)
  p = {k: np.asarray(v, np.float32) for k, v in params.items()}
  width, heads = size.width, size.num_heads
  positions = p[TEXT + "pos_embed"]
  hf_config = {
      "architectures": ["BertModel"], "model_type": "bert", "hidden_size": width,
      "num_hidden_layers": size.depth, "num_attention_heads": heads,
      "intermediate_size": size.mlp_dim, "hidden_act": layout.HIDDEN_ACT[model_cfg.get("gelu")],
      "layer_norm_eps": float(model_cfg.get("ln_eps")), "vocab_size": vocab_size,
      "max_position_embeddings": len(positions), "type_vocab_size": 2, "pad_token_id": 0,
      "position_embedding_type": "absolute", "hidden_dropout_prob": 0.1,
      "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
  }
  t = {"embeddings.word_embeddings.weight": p[TEXT + "token_embed/embedding"],
       "embeddings.position_embeddings.weight": positions,
       "embeddings.token_type_embeddings.weight": np.stack(
           [p[TEXT + "type_embed"], np.zeros(width, np.float32)]),
       "embeddings.LayerNorm.weight": p[TEXT + "norm/scale"],
       "embeddings.LayerNorm.bias": p[TEXT + "norm/bias"],
       "pooler.dense.weight": np.eye(width, dtype=np.float32),
       "pooler.dense.bias": np.zeros(width, np.float32)}
  for i in range(size.depth):
    hf, mm = f"encoder.layer.{i}.", LAYER.format(i=i)
    weights, biases = layout.split_qkv(p[mm + "attn/qkv/kernel"], p[mm + "attn/qkv/bias"])
    for n, w, b in zip(("query", "key", "value"), weights, biases):
      t[f"{hf}attention.self.{n}.weight"], t[f"{hf}attention.self.{n}.bias"] = w, b
    t[f"{hf}attention.output.dense.weight"] = layout.linear_in(
        p[mm + "attn/out/kernel"].reshape(width, width))
    t[f"{hf}attention.output.dense.bias"] = p[mm + "attn/out/bias"]
    for hf_name, mm_name in (("attention.output.LayerNorm", "norm1"),
                             ("output.LayerNorm", "norm2")):
      t[f"{hf}{hf_name}.weight"] = p[mm + mm_name + "/scale"]
      t[f"{hf}{hf_name}.bias"] = p[mm + mm_name + "/bias"]
    for hf_name, mm_name in (("intermediate.dense", "mlp/fc1"), ("output.dense", "mlp/fc2")):
      t[f"{hf}{hf_name}.weight"] = layout.linear_in(p[mm + mm_name + "/kernel"])
      t[f"{hf}{hf_name}.bias"] = p[mm + mm_name + "/bias"]
  return hf_config, {k: np.ascontiguousarray(v) for k, v in t.items()}
