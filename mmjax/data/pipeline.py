"""One example at a time: read a stored example and preprocess it into the host-batch keys
(data.pp_train / data.pp_eval op strings, or each modality's standard recipe), checking its
shapes; bad examples raise ops.BadExample (the reader reports or replaces them)."""
import numpy as np
from absl import logging

from mmjax import modality as modality_lib
from mmjax.data import info as info_lib
from mmjax.data import ops
from mmjax.data import sources
from mmjax.data import standard
from mmjax.errors import UserError

MAX_BAD_IN_A_ROW = 100  # data.on_bad_example='skip' gives up after this many bad draws.


def default_pp(data_cfg, modalities, shapes, *, train):
  """The standard recipe as an op string (mmjax.data.ops): what data.pp_train / data.pp_eval
  mean when left empty. Each modality's own ops (its checks first, then decode / tokenize /
  crop or pad, random audio offset and gain in training when data.augment), in canonical
  order; `shapes` are the stored shapes (Modality.stored_shapes)."""
  steps = [op for m in modality_lib.ordered(modalities)
           for op in modality_lib.get(m).default_pp(data_cfg, shapes, train=train)]
  return "|".join(steps + ["cast('int32', 'label')", "cast('int32', 'image_id')"])


def make(data_cfg, info, modalities, *, train):
  """(ops.Pipeline, the keys it must produce) for training or evaluation of `modalities`."""
  where = "data.pp_train" if train else "data.pp_eval"
  spec = data_cfg[where[5:]] or default_pp(data_cfg, modalities, info.shapes, train=train)
  known = standard.DATASETS.get(data_cfg.name)
  if known and known.adapter:
    spec = f"{known.adapter}|{spec}"
  context = {}
  for m in modality_lib.names():
    context |= modality_lib.get(m).pp_context(data_cfg, info)
  keys = modality_lib.batch_keys(modalities) + ["label", "image_id"]
  return ops.build(spec, context, where=where), keys


def stored(source, index, label_key="label"):
  """Example `index` of `source`, flattened, with the keys every pipeline starts from: label
  (the stored feature data.label_key; without one, the index: each example its own class)
  and image_id (the index where none is stored)."""
  example = {"label": index, "image_id": index} | sources.flatten(source[index])
  if label_key != "label":
    example["label"] = example[label_key]
  return example


def finish(example, keys, shapes, where):
  """The batch keys of a preprocessed example, each checked against `shapes` (a key the
  pipeline does not make is the config's fault; another shape is the example's)."""
  missing = [k for k in keys if k not in example]
  if missing:
    raise UserError(f"{where} does not produce {missing}, which batches need; it makes "
                    f"{sorted(example)}.")
  out = {k: np.asarray(example[k]) for k in keys}
  for k, shape in (shapes or {}).items():
    if out[k].shape != shape:
      raise ops.BadExample(f"{k!r} is {list(out[k].shape)} after {where}, but batches hold "
                           f"{list(shape)} (resize / crop_or_pad in {where}?)")
  return out


class Reader:
  """Example `index` of a split, read and preprocessed by data.pp_train / pp_eval; raises
  ops.BadExample for an example that cannot be used.

  `modalities`: what this dataset has (default: all of info.modalities). Examples get zeros for
  the rest of info.modalities, and has_<modality> says which are real."""

  def __init__(self, data_cfg, info, split, *, train, modalities=None):
    self._data_cfg = data_cfg
    self.source = sources.raw_source(data_cfg, split)
    self.name, self.split, self.policy = data_cfg.name, split, data_cfg.on_bad_example
    self.label_key = data_cfg.label_key
    own = modalities or info.modalities
    self._pipeline, self._keys = make(data_cfg, info, own, train=train)
    self._where = self._pipeline.where
    shapes, dtypes = info_lib.batch_shapes(info), info_lib.batch_dtypes(info.modalities)
    self._shapes = {k: shapes[k] for k in modality_lib.batch_keys(own)}
    self._fill = {k: np.zeros(shapes[k], dtypes[k]) for k in shapes if k not in self._shapes}
    if info_lib.presence_needed(info):
      self._fill |= {modality_lib.presence_key(m): np.bool_(m in own) for m in info.modalities}

  def __len__(self):
    return len(self.source)

  def __getstate__(self):
    # grain's worker processes get the reader pickled: they reopen the data source rather
    # than unpickle it (a TFDS builder with a registered config cannot be rebuilt that way).
    # (Examples held in a list, e.g. by scripts/bench_input.py, travel as they are.)
    keep = isinstance(self.source, list)
    return {k: v for k, v in self.__dict__.items() if k != "source" or keep}

  def __setstate__(self, state):
    self.__dict__.update(state)
    if "source" not in state:
      self.source = sources.raw_source(self._data_cfg, self.split)

  def __call__(self, index, rng=None):
    try:
      # Without labels (or image ids), an example is its own class.
      example = stored(self.source, index, self.label_key)
    except Exception as e:  # A record the dataset's own decoders cannot read.
      raise ops.BadExample(f"the stored record does not decode ({type(e).__name__}: "
                           f"{e})") from None
    example = self._pipeline(example, rng if rng is not None else np.random.default_rng(index))
    return (finish(example, self._keys, self._shapes, self._where) | self._fill
            | {"index": np.int32(index)})

  def bad(self, index, error):
    """Handles a bad example: raises UserError (policy 'error') or logs it ('skip')."""
    where = f"{self.name} {self.split} example {index}: {error}"
    if self.policy == "error":
      raise UserError(f"{where}. Fix or remove it, or set --config.data.on_bad_example=skip "
                      "to skip bad examples and count them.")
    logging.log_first_n(logging.WARNING, "Skipping %s.", 20, where)


class ReadOrReplace:
  """Stream position -> example, for `MapDataset.map_with_index` over split indices. Random
  ops draw from (seed, position). A bad example is replaced by one drawn from (seed, position)
  too, so the stream stays a function of the seed alone; 'skipped' counts the replacements at
  this position."""

  def __init__(self, reader, seed):
    self._reader, self._seed = reader, seed

  def __call__(self, position, index):
    skipped = 0
    while True:
      rng = np.random.default_rng((self._seed, position, skipped))
      try:
        return self._reader(index, rng) | {"skipped": np.int32(skipped)}
      except ops.BadExample as e:
        self._reader.bad(index, e)
      skipped += 1
      if skipped >= MAX_BAD_IN_A_ROW:
        raise UserError(f"{self._reader.name} {self._reader.split}: {skipped} bad examples "
                        "in a row; the dataset looks broken (see the warnings above).")
      index = int(rng.integers(len(self._reader)))
