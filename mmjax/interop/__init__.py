"""Public checkpoints in and out of mmjax.

Import: config.init_from='hf:<folder>' starts a run from a Hugging Face transformers model
folder (config.json and model.safetensors, read with safetensors' NumPy loader: no torch). Its
config.json's model_type picks the converter:

  bert   BertModel and its family (BERT, MiniLM, ...): a text tower, mmjax.interop.bert
  vit    ViTModel (and ViTForImageClassification's encoder): an image tower, mmjax.interop.vit
  vit_mae  ViTMAEForPreTraining: the image tower and MAE's decoder, mmjax.interop.vit_mae
  clip   CLIPModel: image and text towers, projections, logit scale, mmjax.interop.clip
  siglip SiglipModel: towers, the attention-pooling head, logit scale and bias,
         mmjax.interop.siglip

config.init_from='big_vision:<file.npz>' starts from a big_vision SigLIP (two_towers), and
'open_clip:<file.safetensors>' from an OpenAI / open_clip CLIP state dict, the architecture
read from the tensors: mmjax.interop.big_vision, mmjax.interop.open_clip.

The converted weights go through mmjax.train.init_from's report (loaded / new / unused), and
the config must build the checkpoint's architecture (a UserError lists the flags otherwise).

Export: `python -m mmjax.export --workdir=W --out=DIR --format=bert|vit|clip|siglip`
writes a run as a transformers folder (see mmjax.export and mmjax.interop.export).
"""
import importlib
import json
import os
import re

import numpy as np

from mmjax.errors import UserError

FORMATS = ("hf", "big_vision", "open_clip")
# Formats of one file whose tensors say the architecture (mmjax.interop.<format>).
SINGLE_FILE = ("big_vision", "open_clip")
# config.json's model_type -> the converter module (imported when used).
CONVERTERS = {"bert": "mmjax.interop.bert", "vit": "mmjax.interop.vit",
              "clip": "mmjax.interop.clip", "siglip": "mmjax.interop.siglip",
              "vit_mae": "mmjax.interop.vit_mae"}
# (encoder or encoders/<m>)/blocks/blocks/<i>/<rest>: one layer's parameter, unscanned.
_LAYER = re.compile(r"^((?:encoder|encoders/[^/]+)/blocks/blocks)/(\d+)/(.+)$")


def split(init_from):
  """('hf', folder) for an import, (None, path) for an mmjax checkpoint."""
  fmt, sep, rest = (init_from or "").partition(":")
  if sep and fmt in FORMATS:
    return fmt, os.path.abspath(os.path.expanduser(rest))
  return None, init_from


def _folder(fmt, folder):
  """(config.json dict, converter module) of an import folder; UserError for what is missing."""
  files = ("config.json", "model.safetensors")
  missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise UserError(f"config.init_from={fmt}:{folder}: {', '.join(missing)} not found (a "
                    "transformers model folder has config.json and model.safetensors).")
  hf_config = read_config(folder)
  model_type = hf_config.get("model_type")
  if model_type not in CONVERTERS:
    raise UserError(f"config.init_from={fmt}:{folder}: model_type {model_type!r}; mmjax "
                    f"imports {sorted(CONVERTERS)}.")
  return hf_config, importlib.import_module(CONVERTERS[model_type])


def read_config(folder):
  """A transformers folder's config.json as a dict."""
  with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
    return json.load(f)


def model_config(folder):
  """{dotted config.model key: value} that build the architecture of the checkpoint in
  `folder` (apply them with layout.apply)."""
  hf_config, converter = _folder("hf", os.path.abspath(os.path.expanduser(folder)))
  return converter.model_config(hf_config)


def _single_file(fmt, path, model_cfg, info):
  """(tensors, converter) of a one-file import (big_vision .npz, open_clip .safetensors): the
  architecture read from its tensors and checked against the config like a folder's."""
  from mmjax.interop import clip  # pylint: disable=g-import-not-at-top
  from mmjax.interop import siglip  # pylint: disable=g-import-not-at-top
  converter = importlib.import_module(f"mmjax.interop.{fmt}")
  if not os.path.isfile(path):
    raise UserError(f"config.init_from={fmt}:{path}: no such file.")
  tensors = converter.read(path)
  if fmt == "big_vision":
    hf_like = converter.hf_like_config(tensors)
    kind, settings = "SigLIP", siglip.model_config(hf_like)
  else:
    hf_like = converter.hf_like_config(tensors, path, model_cfg.get("gelu"))
    kind, settings = "CLIP", clip.model_config(hf_like)
  clip.check_pair(kind, settings, hf_like, model_cfg, info, f"{fmt}:{path}")
  return tensors, hf_like, converter


def check(init_from, model_cfg, info):
  """Cheap checks before anything is built: the checkpoint's architecture against the config
  (UserError naming the flags to set)."""
  fmt, folder = split(init_from)
  if fmt in SINGLE_FILE:
    _single_file(fmt, folder, model_cfg, info)
    return
  hf_config, converter = _folder(fmt, folder)
  converter.check(hf_config, model_cfg, info, folder)


def _to_layout(values, target_shapes):
  """Per-layer encoder parameters stacked on a leading axis where the model scans its layers
  (target names without the layer index)."""
  stacked, out = {}, {}
  for name, value in values.items():
    m = _LAYER.match(name)
    if m and name not in target_shapes and f"{m[1]}/{m[3]}" in target_shapes:
      stacked.setdefault(f"{m[1]}/{m[3]}", {})[int(m[2])] = value
    else:
      out[name] = value
  for name, layers in stacked.items():
    out[name] = np.stack([layers[i] for i in sorted(layers)])
  return out


def load(init_from, model_cfg, info, target_shapes):
  """({mmjax name: float32 array} in the model's layout, notes): the weights of an import
  (see the module docstring), checked against the config first."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  fmt, folder = split(init_from)
  if fmt in SINGLE_FILE:
    tensors, hf_like, converter = _single_file(fmt, folder, model_cfg, info)
    values, notes = (converter.to_mmjax(tensors, target_shapes) if fmt == "big_vision"
                     else converter.to_mmjax(tensors, hf_like, target_shapes))
    return _to_layout(values, target_shapes), notes
  hf_config, converter = _folder(fmt, folder)
  converter.check(hf_config, model_cfg, info, folder)
  tensors = load_file(os.path.join(folder, "model.safetensors"))
  values, notes = converter.to_mmjax(hf_config, tensors, target_shapes)
  return _to_layout(values, target_shapes), notes
