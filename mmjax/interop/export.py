"""mmjax parameters as a Hugging Face transformers folder (`write`; `python -m mmjax.export`
reads them from a run's checkpoint): DIR/config.json and DIR/model.safetensors of

  bert   its text tower as a BertModel, with DIR/vocab.txt (the run's config.data.vocab_file,
         or --vocab_file); the run must be post-LN (config.model.block='post_ln', as an import
         of a BERT checkpoint is). mmjax.interop.bert.from_mmjax.
  vit    its image tower (shared encoder or towers/image) as a ViTModel: a class token, no
         LayerNorm before the encoder. mmjax.interop.vit.from_mmjax.
  clip   its image and text towers, projections and logit scale as a CLIPModel (--eos_token_id:
         the text rows' last token, which CLIP pools). mmjax.interop.clip.from_mmjax.
  siglip its towers, MAP head, text head, logit scale and bias as a SiglipModel.
         mmjax.interop.siglip.from_mmjax.

A model the format cannot express exactly is refused with the config keys that differ: an
export gives transformers the same function, or nothing.
"""
import json
import os
import re
import shutil

import numpy as np

from mmjax.errors import UserError
from mmjax.interop import bert
from mmjax.interop import clip
from mmjax.interop import siglip
from mmjax.interop import vit

FORMATS = ("bert", "vit", "clip", "siglip")
# A scanned Stack's parameter: a leading layer axis and no layer index in its name.
_SCANNED = re.compile(r"^((?:encoder|encoders/[^/]+|decoder)/blocks/blocks)/(?!\d+/)(.+)$")


def unstack_layers(params):
  """{name: array} with scanned parameters (a leading layer axis, no index in the name) split
  into one entry per layer, as the converters name them."""
  out = {}
  for name, value in params.items():
    m = _SCANNED.match(name)
    if m:
      value = np.asarray(value)
      out |= {f"{m[1]}/{i}/{m[2]}": value[i] for i in range(value.shape[0])}
    else:
      out[name] = value
  return out


def _save(hf_config, tensors, out_dir):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  tensors = {k: np.array(v, np.float32, order="C") for k, v in tensors.items()}  # (0-d stays 0-d)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
  return out_dir


def write_bert(params, model_cfg, vocab_file, out_dir):
  """Writes the text tower in `params` ({mmjax name: array}) as a BertModel folder."""
  with open(vocab_file, encoding="utf-8") as f:
    vocab_size = sum(1 for _ in f)
  _save(*bert.from_mmjax(unstack_layers(params), model_cfg, vocab_size), out_dir)
  shutil.copyfile(vocab_file, os.path.join(out_dir, "vocab.txt"))
  return out_dir


def write(fmt, params, model_cfg, out_dir, *, vocab_file=None, eos_token_id=None,
          image_size=None):
  """Writes `params` ({mmjax name: array}) of a model of `model_cfg` as a transformers folder
  of format `fmt` (one of FORMATS); image_size (H, W): the images' (for sin-cos positions)."""
  params = {k: np.asarray(v, np.float32) for k, v in unstack_layers(params).items()}
  if fmt == "bert":
    if not vocab_file:
      raise UserError("--format=bert writes vocab.txt: give the run's --vocab_file.")
    return write_bert(params, model_cfg, vocab_file, out_dir)
  if fmt == "vit":
    return _save(*vit.from_mmjax(params, model_cfg, image_size), out_dir)
  if fmt == "clip":
    return _save(*clip.from_mmjax(params, model_cfg, eos_token_id, image_size), out_dir)
  if fmt == "siglip":
    return _save(*siglip.from_mmjax(params, model_cfg, image_size), out_dir)
  raise UserError(f"--format={fmt!r}: mmjax exports {list(FORMATS)}.")
