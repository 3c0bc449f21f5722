"""Which datasets there are and how their stored examples are opened.

A dataset name `mmjax_<x>` is the module `mmjax.data.<x>`, which provides
`make_builder(data_cfg)` (a TFDS builder writing ArrayRecord files) and `require_build_tools()`.
Any other name is a TFDS dataset already prepared under data.dir, e.g. one built from your own
files by `python -m mmjax.data.build`, or a standard one (mmjax.data.standard). Examples are
read by random access from the ArrayRecord files through TFDS data sources, without
TensorFlow. TFDS is imported inside the functions: it takes a while to import.
"""
import dataclasses
import importlib
import os

import ml_collections

from mmjax.data import standard
from mmjax.errors import UserError


def dataset_module(name):
  """The module that defines dataset `name` ("mmjax_digits" -> mmjax.data.digits), or None for
  a name that is not `mmjax_<x>` (a prepared TFDS dataset)."""
  if not (isinstance(name, str) and name.startswith("mmjax_")):
    return None
  module = None
  if name[6:].isidentifier():
    try:
      module = importlib.import_module(f"mmjax.data.{name[6:]}")
    except ModuleNotFoundError as e:
      if e.name != f"mmjax.data.{name[6:]}":
        raise
  if module is None or not hasattr(module, "make_builder"):
    raise UserError(f"Unknown dataset data.name={name!r}. Built-in datasets are named "
                    "mmjax_<x> after a builder module mmjax/data/<x>.py, e.g. 'mmjax_digits'.")
  return module


def writable_dir(path, why):
  """Creates `path` if needed; raises UserError (naming data.dir) if it cannot be written."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"data.dir: cannot create {path!r} ({e.strerror}), but {why}. Point "
                    "--config.data.dir at a writable directory.") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"data.dir: {path!r} is not writable, but {why}. Point --config.data.dir "
                    "at a writable directory.")


def builder(data_cfg):
  """(module or None, TFDS builder) for data_cfg.name."""
  module = dataset_module(data_cfg.name)
  cfg = ml_collections.ConfigDict(data_cfg.to_dict())
  cfg.dir = os.path.expanduser(data_cfg.dir)
  if module is not None:
    return module, module.make_builder(cfg)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return None, tfds.builder(data_cfg.name, data_dir=cfg.dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
        f"Unknown dataset data.name={data_cfg.name!r}: it is neither built in (mmjax_<x>) nor "
        f"prepared in data.dir={data_cfg.dir!r}. Build your own paired files with "
        "`python -m mmjax.data.build --manifest=... --name=... --data_dir=...`.") from None


def data_source(data_cfg, split):
  """The stored examples of `split` of a prepared dataset, by random access (no TensorFlow).

  Examples are dicts as stored: for mmjax_digits, image uint8[8,8,1], audio int16[T],
  caption and voice bytes, label and image_id int.
  """
  _, b = builder(data_cfg)
  # What tfds.data_source(name, download=False, ...) does, minus building a second builder.
  return b.as_data_source(split=split)


def raw_source(data_cfg, split):
  """Like data_source, but images stay encoded: the loader's decode op checks them."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _, b = builder(data_cfg)
  decoders = {k: tfds.decode.SkipDecoding() for k, f in b.info.features.items()
              if isinstance(f, tfds.features.Image)}
  return b.as_data_source(split=split, decoders=decoders or None)


def readable(data_cfg):
  """Whether the train split can be opened (a prepared dataset, or TFDS's mock_data)."""
  try:
    raw_source(data_cfg, data_cfg.train_split)
  except Exception:  # pylint: disable=broad-exception-caught
    return False
  return True


def split_sizes(data_cfg, b):
  """{split: examples}, from the dataset's info or, where that has none (mock data), by
  opening each split the dataset is known to have."""
  if b.info.splits:
    return {name: split.num_examples for name, split in b.info.splits.items()}
  known = standard.DATASETS.get(data_cfg.name)
  names = known.splits if known else (data_cfg.train_split,)
  return {name: len(raw_source(data_cfg, name)) for name in names}


def flatten(example, prefix=""):
  """Nested feature dicts -> one level with '/' in the keys (coco's 'captions/text')."""
  out = {}
  for k, v in example.items():
    if isinstance(v, dict):
      out |= flatten(v, f"{prefix}{k}/")
    else:
      out[f"{prefix}{k}"] = v
  return out


@dataclasses.dataclass
class Prepared:
  """A dataset being prepared, as Modality.describe sees it."""
  data_cfg: ml_collections.ConfigDict
  module: object  # The mmjax.data.<x> module of a built-in dataset, else None.
  builder: object  # Its TFDS builder.
  known: standard.Standard | None  # Its entry in mmjax.data.standard, if any.

  @property
  def features(self):
    return self.builder.info.features

  def train_examples(self):
    """The train split's stored examples, flattened, images still encoded."""
    return (flatten(ex) for ex in raw_source(self.data_cfg, self.data_cfg.train_split))

  def first_train_example(self):
    return next(iter(self.train_examples()))
