"""Exports a run's checkpoint as a Hugging Face transformers folder:

  python -m mmjax.export --workdir=W --out=DIR [--format=bert|vit|clip|siglip] [--step=N]

reads the run's latest checkpoint (or step N) as host NumPy arrays, whatever mesh saved it, and
writes it with mmjax.interop.export.write (see there for the formats and what each needs).
A program on top of the training code (it reads checkpoints) and of the converters.
"""
import json
import os

import jax
import numpy as np
from absl import app
from absl import flags

from mmjax.errors import UserError
from mmjax.interop import export as interop_export
from mmjax.train import init_from


def export_run(workdir, out_dir, step=None, vocab_file=None, fmt="bert", eos_token_id=None,
               image_size=None):
  """The run (its checkpoint `step`, or the latest) as a transformers folder (see `write`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
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
  return interop_export.write(fmt, flat, config.model, out_dir, vocab_file=vocab_file,
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
  flags.DEFINE_enum("format", "bert", interop_export.FORMATS, "The transformers model to write.")
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
