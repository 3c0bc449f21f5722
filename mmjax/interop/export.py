"""Exports an mmjax text tower as a Hugging Face transformers folder that `BertModel` loads:

  python -m mmjax.interop.export --workdir=W --out=DIR [--step=N]

writes DIR/config.json, DIR/model.safetensors and DIR/vocab.txt (the run's config.data.vocab_file,
or --vocab_file) from the
run's latest checkpoint (or step N). The run must build a BERT architecture
(config.model.block='post_ln', as an import of a BERT checkpoint does); see mmjax.interop.bert
for what maps to what.
"""
import json
import os
import shutil

import jax
import numpy as np
from absl import app
from absl import flags

from mmjax.errors import UserError
from mmjax.interop import bert

_LAYER_PREFIX = "encoder/blocks/blocks/"


def unstack_layers(params, depth):
  """{name: array} with scanned encoder parameters (a leading layer axis, no index in the
  name) split into one entry per layer, as the converters name them."""
  out = {}
  for name, value in params.items():
    rest = name[len(_LAYER_PREFIX):] if name.startswith(_LAYER_PREFIX) else None
    if rest is not None and not rest.split("/")[0].isdigit():
      out |= {f"{_LAYER_PREFIX}{i}/{rest}": np.asarray(value)[i] for i in range(depth)}
    else:
      out[name] = value
  return out


def write_bert(params, model_cfg, vocab_file, out_dir):
  """Writes the text tower in `params` ({mmjax name: array}) as a BertModel folder."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  with open(vocab_file, encoding="utf-8") as f:
    vocab_size = sum(1 for _ in f)
  params = unstack_layers(params, sizes.of(model_cfg).depth)
  hf_config, tensors = bert.from_mmjax(params, model_cfg, vocab_size)
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
  shutil.copyfile(vocab_file, os.path.join(out_dir, "vocab.txt"))
  return out_dir


_WORKDIR = flags.DEFINE_string("workdir", None, "The run to export.", required=True)
_OUT = flags.DEFINE_string("out", None, "The folder to write.", required=True)
_STEP = flags.DEFINE_integer("step", None, "The checkpoint step (default: the latest).")
_VOCAB = flags.DEFINE_string("vocab_file", None, "The run's vocab.txt (default: its "
                             "config.data.vocab_file).")


def export_run(workdir, out_dir, step=None, vocab_file=None):
  """The run's text tower (its checkpoint `step`, or the latest) as a BertModel folder."""
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
  vocab_file = vocab_file or config.data.vocab_file
  if not vocab_file:
    raise UserError(f"--workdir={workdir} learned its vocab (config.data.vocab_file is empty): "
                    "give that vocab.txt as --vocab_file (it is beside the prepared data).")
  return write_bert(flat, config.model, vocab_file, out_dir)


def main(argv):
  del argv
  try:
    print(f"Wrote {export_run(_WORKDIR.value, _OUT.value, _STEP.value, _VOCAB.value)}")
  except UserError as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main)
