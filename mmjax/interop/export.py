"""Exports an mmjax run as a Hugging Face transformers folder:

  python -m mmjax.interop.export --workdir=W --out=DIR [--format=bert] [--step=N]

writes DIR/config.json and DIR/model.safetensors from the run's latest checkpoint (or step N):

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

import jax
import numpy as np
from absl import app
from absl import flags

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


def export_run(workdir, out_dir, step=None, vocab_file=None, fmt="bert", eos_token_id=None,
               image_size=None):
  """The run (its checkpoint `step`, or the latest) as a transformers folder (see `write`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from mmjax.train import init_from  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"--workdir={workdir}: no config.json (is it an mmjax run?).")
  with open(path, encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  directory = init_from.step_dir(os.path.join(workdir, "checkpoints", str(step)) if step
                                 else workdir)
  # Host NumPy arrays, whatever mesh saved them (an export needs no devices).
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          init_from.state_metadata(directory))
  saved = ocp.PyTreeCheckpointer().restore(os.path.join(directory, init_from.STATE_ITEM),
                                           args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  unwrap = lambda t: (t["value"] if set(t) == {"value"} else {k: unwrap(v) for k, v in t.items()}
                      ) if isinstance(t, dict) else t
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(f"{prefix}{k}/", v)
      else:
        flat[prefix + str(k)] = np.asarray(v)

  walk("", unwrap(saved["params"]))
  vocab_file = vocab_file or config.get("data", {}).get("vocab_file")
  if fmt in ("bert", "clip") and not vocab_file and eos_token_id is None:
    raise UserError(f"--workdir={workdir} learned its vocab (config.data.vocab_file is empty): "
                    "give that vocab.txt as --vocab_file (it is beside the prepared data).")
  if fmt == "clip" and eos_token_id is None:
    eos_token_id = _token_id(vocab_file, "[SEP]")
  return write(fmt, flat, config.model, out_dir, vocab_file=vocab_file,
               eos_token_id=eos_token_id,
               image_size=None if image_size is None else (image_size, image_size))


def _token_id(vocab_file, token):
  with open(vocab_file, encoding="utf-8") as f:
    for i, line in enumerate(f):
      if line.rstrip("\n") == token:
        return i
  raise UserError(f"{vocab_file} has no {token}: give --eos_token_id.")


def _define_flags():
  """The command line's flags (defined only when run as a program: absl's flag names are
  global, and --image_size is also mmjax.data.build's)."""
  flags.DEFINE_string("workdir", None, "The run to export.", required=True)
  flags.DEFINE_string("out", None, "The folder to write.", required=True)
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the latest).")
  flags.DEFINE_string("vocab_file", None, "The run's vocab.txt (default: its "
                      "config.data.vocab_file).")
  flags.DEFINE_enum("format", "bert", FORMATS, "The transformers model to write.")
  flags.DEFINE_integer("image_size", None, "vit, clip, siglip: the (square) image size, for a "
                       "model with sin-cos positions.")
  flags.DEFINE_integer("eos_token_id", None, "clip: the id that ends every text row (default: "
                       "[SEP] in the run's vocab).")


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    out = export_run(f.workdir, f.out, f.step, f.vocab_file, f.format, f.eos_token_id,
                     f.image_size)
    print(f"Wrote {out}")
  except UserError as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  _define_flags()
  app.run(main)
