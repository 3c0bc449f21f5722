"""From a data config to host batches: build the dataset once, then read it with grain.

  info = loader.prepare(config.data)          # builds on first use, learns the vocab
  for batch in loader.train_loader(config.data, info, global_batch_size=128, seed=0): ...
  for batch in loader.split_batches(config.data, info, "test", 256): ...   # evaluation

A dataset name `mmjax_<x>` is the module `mmjax.data.<x>`, which provides `MODALITIES`,
`IMAGE_SHAPE`, `make_builder(data_cfg)` (a TFDS builder writing ArrayRecord files) and
`require_build_tools()`. Any other name is a TFDS dataset already prepared under data.dir, e.g.
one built from your own files by `python -m mmjax.data.build` (features image / caption /
audio / label, any subset). Examples are read by random access from the ArrayRecord files through
TFDS data sources, without TensorFlow. TFDS is imported inside the functions: configs import
this module for default_config(), and TFDS takes a while to import.

Host batches are dicts of numpy arrays (B: this process's batch):
  image uint8[B,H,W,C], text_ids int32[B,L], text_mask bool[B,L], audio float32[B,T],
  audio_mask bool[B,T], label int32[B], image_id int32[B], index int32[B] (the example's
  position in its split), has_<modality> bool[B] for each modality when a data.mixture entry
  lacks some modality (False where the example's dataset lacks it; its keys then hold zeros); train
  batches add skipped int32[B] (bad examples replaced at that position) and source int32[B]
  (the data.mixture entry it came from, 0 without one), split_batches add valid bool[B].

Bad examples (an image that does not decode, empty or non-UTF-8 text, silent or too-short
audio, a wrong sample rate) are an error naming the split and example (data.on_bad_example=
'error'), or are skipped and counted ('skip'): in training, another example drawn at random
(from the seed and stream position) takes the bad one's place, and the train state counts the
replacements (train/bad_examples_skipped); evaluation leaves them out.
"""
import dataclasses
import functools
import importlib
import itertools
import os

import grain
import ml_collections
import numpy as np
from absl import logging

from mmjax.data import ops as ops_lib
from mmjax.data import preprocess
from mmjax.data import standard
from mmjax.data import text_tokenizer
from mmjax.data import presence_key
from mmjax.errors import UserError

# Training-time audio augmentation: a random start offset and a random gain in this range (dB).
# espeak-ng peaks near 0.65 of full scale, so +3 dB still does not clip.
_GAIN_DB = (-10.0, 3.0)
_MIN_TEXT_LEN = 3  # [CLS], one wordpiece, [SEP].
_MAX_BAD_IN_A_ROW = 100  # data.on_bad_example='skip' gives up after this many bad draws.
BAD_EXAMPLE_POLICIES = ("error", "skip")


def default_config():
  """The data settings every training config has (`config.data`)."""
  return ml_collections.ConfigDict(dict(
      name="mmjax_digits",  # `mmjax_<x>`: the builder in mmjax/data/<x>.py; else a TFDS name.
      train_split="train",
      dir="",  # Where built datasets live; configs set it (configs.common.default_data_dir).
      sample_rate=8000,  # Hz of the stored speech; part of the built dataset's identity.
      audio_seconds=1.0,  # Waveforms are cropped/padded to this length.
      text_len=16,  # Token rows: [CLS] wordpieces [SEP] [PAD]...
      vocab_file="",  # A BERT-style vocab.txt; '' learns one from the train captions.
      vocab_size=200,  # Upper bound when learning the vocab.
      max_images=0,  # 0: all images; otherwise a smaller dataset (its own build).
      examples_per_image=3,  # Train split: pairings (caption, voice) per image.
      augment=True,  # Random audio gain and start offset in training batches.
      min_audio_seconds=0.1,  # Shorter waveforms are bad examples.
      on_bad_example="error",  # 'error': stop, naming the example; 'skip': skip and count.
      num_workers=0,  # grain worker processes; 0 reads and preprocesses in the main process.
      labels_per_class=0,  # >0: train on that many examples of each class only (few-shot).
      # Preprocessing as op strings (mmjax/data/ops.py), e.g. "decode|resize(32)|...";
      # '' is the standard recipe for the dataset (loader.default_pp).
      pp_train="",
      pp_eval="",
      # Training on a weighted mixture: {key: ConfigDict(weight=w, <data fields to change>)},
      # e.g. mixture.coco = dict(weight=0.8, name="coco_captions", pp_train=...). Each entry is
      # this data config with its fields changed; this config itself is what evaluators read.
      # Entries may differ in modalities (image-text pairs, audio-text pairs, images alone):
      # batches carry their union and has_<modality> flags. Entries that share a modality must
      # make the same shapes for it; all share one vocab. {}: none.
      mixture=ml_collections.ConfigDict(),
  ))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What models and evaluators need to know about a prepared dataset."""
  name: str
  modalities: tuple  # Subset of ("image", "text", "audio"), in that order.
  image_shape: tuple  # (H, W, C).
  text_len: int  # L.
  vocab_size: int  # Tokens in vocab_file (a learned vocab can be smaller than asked for).
  vocab_file: str
  audio_len: int  # T, in samples.
  sample_rate: int
  num_classes: int
  class_names: tuple
  split_sizes: dict  # Split name -> number of examples.
  # With a data.mixture whose entries differ in modalities, `modalities` is their union (what
  # the model and batches have) and these say what each part really has; () means all of
  # `modalities`. Batches flag the rest: has_<modality> False, zeros in its keys.
  entry_modalities: tuple = ()  # Per mixture entry, in order (training).
  data_modalities: tuple = ()  # The data config's own dataset (what evaluators read).


def _dataset_module(name):
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


def _check_config(data_cfg):
  """Raises UserError, naming the key, for settings that cannot work."""
  def need(ok, key, what):
    if not ok:
      raise UserError(f"data.{key}={data_cfg[key]!r}: {what}")

  need(isinstance(data_cfg.dir, str) and data_cfg.dir.strip(), "dir",
       "set it to a directory for the built datasets, e.g. --config.data.dir=~/mmjax_data.")
  need(data_cfg.sample_rate > 0, "sample_rate", "must be a positive number of Hz, e.g. 8000.")
  need(data_cfg.audio_seconds > 0, "audio_seconds", "must be positive, e.g. 1.0.")
  need(round(data_cfg.audio_seconds * data_cfg.sample_rate) >= 1, "audio_seconds",
       "is shorter than one sample at data.sample_rate.")
  need(data_cfg.text_len >= _MIN_TEXT_LEN, "text_len",
       f"must be at least {_MIN_TEXT_LEN} ([CLS], one token, [SEP]), e.g. 16.")
  need(data_cfg.vocab_size > len(text_tokenizer.SPECIAL_TOKENS), "vocab_size",
       f"must exceed the {len(text_tokenizer.SPECIAL_TOKENS)} special tokens, e.g. 200.")
  need(data_cfg.num_workers >= 0, "num_workers", "must be >= 0 (0: no worker processes).")
  need(data_cfg.labels_per_class >= 0, "labels_per_class",
       "must be >= 0 (0: every example of the train split).")
  need(0 <= data_cfg.min_audio_seconds <= data_cfg.audio_seconds, "min_audio_seconds",
       f"must be in [0, data.audio_seconds={data_cfg.audio_seconds}].")
  need(data_cfg.on_bad_example in BAD_EXAMPLE_POLICIES, "on_bad_example",
       f"must be one of {BAD_EXAMPLE_POLICIES}.")
  for key in ("pp_train", "pp_eval"):  # Op names and syntax now; arguments when built.
    ops_lib.parse(data_cfg[key], where=f"data.{key}")
  need(not data_cfg.vocab_file or os.path.isfile(os.path.expanduser(data_cfg.vocab_file)),
       "vocab_file", "no such file; give a BERT-style vocab.txt, or '' to learn a vocab "
       "from the training captions.")


def _writable_dir(path, why):
  """Creates `path` if needed; raises UserError (naming data.dir) if it cannot be written."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"data.dir: cannot create {path!r} ({e.strerror}), but {why}. Point "
                    "--config.data.dir at a writable directory.") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"data.dir: {path!r} is not writable, but {why}. Point --config.data.dir "
                    "at a writable directory.")


def _builder(data_cfg):
  """(module or None, TFDS builder) for data_cfg.name."""
  module = _dataset_module(data_cfg.name)
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


def _generic_info(builder, data_cfg):
  """(modalities, image shape) of a prepared TFDS dataset from its features."""
  features = builder.info.features
  known = standard.DATASETS.get(data_cfg.name)
  modalities = known.modalities if known else tuple(
      m for m, key in (("image", "image"), ("text", "caption"), ("audio", "audio"))
      if key in features)
  if not modalities:
    raise UserError(f"{data_cfg.name} has none of the features image / caption / audio "
                    f"(it has {sorted(features)}).")
  image_shape = (0, 0, 0)
  if "image" in modalities:
    image_shape = tuple(features["image"].shape)
    if None in image_shape[:2] and not (data_cfg.pp_train and data_cfg.pp_eval):
      raise UserError(f"{data_cfg.name}: images of varying size {image_shape}; give "
                      "data.pp_train and data.pp_eval with a resize (e.g. \"decode|resize(32)|"
                      "...\"), or build the dataset at a fixed size.")
  if known and known.sample_rate and known.sample_rate != data_cfg.sample_rate:
    raise UserError(f"data.sample_rate={data_cfg.sample_rate}, but {data_cfg.name}'s audio is "
                    f"stored at {known.sample_rate} Hz: set "
                    f"--config.data.sample_rate={known.sample_rate}.")
  if "audio" in modalities and "sample_rate" in features:
    # Checked per example as well (preprocess.get_check_audio); the first says it up front.
    rate = int(_raw_source(data_cfg, data_cfg.train_split)[0]["sample_rate"])
    if rate != data_cfg.sample_rate:
      raise UserError(f"data.sample_rate={data_cfg.sample_rate}, but {data_cfg.name}'s audio "
                      f"is stored at {rate} Hz: set --config.data.sample_rate={rate}.")
  return modalities, image_shape


def prepare(data_cfg):
  """Builds the dataset (first use only) and its vocab; returns its DatasetInfo.

  Building needs the dataset's tools (espeak-ng for mmjax_digits) and a writable data.dir;
  reading a built dataset needs neither.
  """
  _check_config(data_cfg)
  module, builder = _builder(data_cfg)
  if module is None and not _readable(data_cfg):
    raise UserError(f"data.name={data_cfg.name!r} is not prepared in data.dir={data_cfg.dir!r}, "
                    "and mmjax does not download datasets: prepare it there first (README: "
                    "Standard datasets, Your own data).")
  if module is not None and not builder.is_prepared():
    _writable_dir(os.fspath(builder.data_dir_root), f"{data_cfg.name} must be built there first")
    module.require_build_tools()
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder.download_and_prepare(
        # Everything is generated locally: never look for a prebuilt copy on GCS.
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  stored_rate = (builder.info.metadata or {}).get("sample_rate")
  if stored_rate is not None and int(stored_rate) != data_cfg.sample_rate:
    raise UserError(f"data.sample_rate={data_cfg.sample_rate}, but {data_cfg.name}'s audio is "
                    f"stored at {stored_rate} Hz.")

  modalities, image_shape = (
      _generic_info(builder, data_cfg) if module is None
      else (tuple(module.MODALITIES), tuple(module.IMAGE_SHAPE)))
  vocab_file = os.path.expanduser(data_cfg.vocab_file)
  if not vocab_file and "text" in modalities:
    # Saved with the built data: each build (and vocab size) gets its own vocab. A TFDS
    # dataset's folder may be read-only (a bucket): its vocab goes beside it in data.dir.
    vocab_dir = os.fspath(builder.data_dir) if module else os.path.expanduser(data_cfg.dir)
    vocab_file = os.path.join(vocab_dir, f"wordpiece_{data_cfg.vocab_size}.txt" if module else
                              f"{data_cfg.name}_{data_cfg.train_split}_wordpiece_"
                              f"{data_cfg.vocab_size}.txt")
    if not os.path.exists(vocab_file):
      _writable_dir(vocab_dir, "the learned vocab is saved there (or set data.vocab_file)")
      train = _raw_source(data_cfg, data_cfg.train_split)
      known = standard.DATASETS.get(data_cfg.name)
      key = known.text_key if known else "caption"
      # Bad captions (empty, not UTF-8) are left out here; the loader reports them.
      captions = (c for ex in train for c in _texts(_flatten(ex)[key]) if c.strip())
      text_tokenizer.learn_vocab(captions, data_cfg.vocab_size, vocab_file)
  vocab_size = (text_tokenizer.WordPieceTokenizer(vocab_file, data_cfg.text_len).vocab_size
                if "text" in modalities else 0)
  # Without labels, each example is its own class: retrieval then finds the exact pair.
  label = builder.info.features["label"] if "label" in builder.info.features else None
  info = DatasetInfo(
      name=data_cfg.name,
      modalities=modalities,
      image_shape=image_shape,
      text_len=data_cfg.text_len,
      vocab_size=vocab_size,
      vocab_file=vocab_file,
      audio_len=round(data_cfg.audio_seconds * data_cfg.sample_rate),
      sample_rate=data_cfg.sample_rate,
      num_classes=label.num_classes if label else 0,
      class_names=tuple(label.names) if label else (),
      split_sizes=_split_sizes(data_cfg, builder),
  )
  info = dataclasses.replace(info, **_output_shapes(data_cfg, info))
  return _with_mixture(data_cfg, info) if data_cfg.mixture else info


def _with_mixture(data_cfg, info):
  """`info` widened to the union of the mixture entries' modalities. Entries that share a
  modality must agree on its batch shapes (and audio sample rate); the vocab is the data
  config's, or the first text entry's when the data config has no text."""
  parts = {key: prepare(cfg) for key, (cfg, _) in zip(data_cfg.mixture,
                                                         mixture_components(data_cfg, info))}
  shapes, origin = dict(batch_shapes(info)), dict.fromkeys(batch_shapes(info), "data")
  first = {m: info for m in info.modalities}  # Modality -> the part that defines it.
  for key, part in parts.items():
    for k, shape in batch_shapes(part).items():
      if shapes.setdefault(k, shape) != shape:
        raise UserError(
            f"data.mixture.{key} ({part.name}) makes {k!r} of shape {list(shape)}, but "
            f"{origin[k]} ({first[_modality_of(k)].name}) makes {list(shapes[k])}; entries "
            "that share a modality must make the same batch shapes (set its pp_train).")
      origin.setdefault(k, f"data.mixture.{key}")
    for m in part.modalities:
      first.setdefault(m, part)
    if "audio" in part.modalities and part.sample_rate != first["audio"].sample_rate:
      raise UserError(f"data.mixture.{key}.sample_rate={part.sample_rate}, but "
                      f"{first['audio'].name}'s audio is at {first['audio'].sample_rate} Hz; "
                      "one model hears every entry (resample in its pp_train).")
  union = tuple(m for m in BATCH_KEYS if m in first)
  text = first.get("text", info)
  return dataclasses.replace(
      info, modalities=union, entry_modalities=tuple(p.modalities for p in parts.values()),
      data_modalities=info.modalities, vocab_file=text.vocab_file, vocab_size=text.vocab_size,
      image_shape=first.get("image", info).image_shape, text_len=text.text_len,
      audio_len=first.get("audio", info).audio_len,
      sample_rate=first.get("audio", info).sample_rate)


def presence_needed(info):
  """Whether batches carry has_<modality> flags: only when some part of the data (a mixture
  entry, or the evaluated dataset) lacks one of info.modalities. Without flags the model takes
  every example to have every modality, and the losses skip the masking (and, on a multi-host
  CPU run, the extra collectives that gloo can deadlock on)."""
  parts = tuple(info.entry_modalities) + (info.data_modalities,)
  return any(mods and set(mods) != set(info.modalities) for mods in parts)


def _modality_of(batch_key):
  return next(m for m, keys in BATCH_KEYS.items() if batch_key in keys)


def mixture_components(data_cfg, info=None):
  """[(data config, weight)] of what training reads: data.mixture's entries (each the data
  config with its fields changed, sharing `info`'s vocab), or the data config alone."""
  if not data_cfg.mixture:
    return [(data_cfg, 1.0)]
  base = data_cfg.to_dict()
  base["mixture"] = {}
  components = []
  for key, entry in data_cfg.mixture.items():
    cfg = ml_collections.ConfigDict(base)
    for field, value in entry.items():
      if field == "weight":
        continue
      if field not in cfg or field == "mixture":
        raise UserError(f"data.mixture.{key}.{field}: not a data field to change; fields: "
                        f"{sorted(k for k in cfg if k != 'mixture')}.")
      cfg[field] = value
    if info is not None and "vocab_file" not in entry:
      cfg.vocab_file = info.vocab_file  # One tokenizer for every entry.
    weight = entry.get("weight", 0)
    if not weight > 0:
      raise UserError(f"data.mixture.{key}.weight={weight!r}: give a positive weight.")
    components.append((cfg, float(weight)))
  return components


def _output_shapes(data_cfg, info):
  """Image shape, text and audio lengths of what data.pp_train / pp_eval make, from the first
  usable train example; both must make the same keys and shapes (one model reads both)."""
  source = _raw_source(data_cfg, data_cfg.train_split)
  pipelines = {train: _pipeline(data_cfg, info.modalities, info.image_shape[-1] or 3,
                                info.vocab_file, train=train) for train in (True, False)}
  for index in range(min(len(source), _MAX_BAD_IN_A_ROW)):
    example = {"label": index, "image_id": index} | _flatten(source[index])
    try:
      out = {train: _finish(pipe(example, np.random.default_rng(0)), keys, None, pipe.where)
             for train, (pipe, keys) in pipelines.items()}
    except preprocess.BadExample:
      continue
    shapes = {train: {k: v.shape for k, v in o.items() if k in batch_shapes(info)}
              for train, o in out.items()}
    if shapes[True] != shapes[False]:
      raise UserError(f"data.pp_train makes {shapes[True]}, but data.pp_eval makes "
                      f"{shapes[False]}; one model reads both, so they must agree.")
    made = shapes[False]
    return dict(
        image_shape=tuple(made["image"]) if "image" in made else info.image_shape,
        text_len=made["text_ids"][0] if "text_ids" in made else info.text_len,
        audio_len=made["audio"][0] if "audio" in made else info.audio_len)
  raise UserError(f"{info.name}: none of the first {_MAX_BAD_IN_A_ROW} train examples survives "
                  "data.pp_eval; the dataset or the op string is broken.")


def data_source(data_cfg, split):
  """The stored examples of `split` of a prepared dataset, by random access (no TensorFlow).

  Examples are dicts as stored: for mmjax_digits, image uint8[8,8,1], audio int16[T],
  caption and voice bytes, label and image_id int.
  """
  _, builder = _builder(data_cfg)
  # What tfds.data_source(name, download=False, ...) does, minus building a second builder.
  return builder.as_data_source(split=split)


def _readable(data_cfg):
  """Whether the train split can be opened (a prepared dataset, or TFDS's mock_data)."""
  try:
    _raw_source(data_cfg, data_cfg.train_split)
  except Exception:  # pylint: disable=broad-exception-caught
    return False
  return True


def _split_sizes(data_cfg, builder):
  """{split: examples}, from the dataset's info or, where that has none (mock data), by
  opening each split the dataset is known to have."""
  if builder.info.splits:
    return {name: split.num_examples for name, split in builder.info.splits.items()}
  known = standard.DATASETS.get(data_cfg.name)
  names = known.splits if known else (data_cfg.train_split,)
  return {name: len(_raw_source(data_cfg, name)) for name in names}


def _texts(value):
  """A stored text feature (bytes or str, or a list of them) as a list of str."""
  items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
  return [t.decode("utf-8", "ignore") if isinstance(t, (bytes, np.bytes_)) else str(t)
          for t in items]


def _flatten(example, prefix=""):
  """Nested feature dicts -> one level with '/' in the keys (coco's 'captions/text')."""
  out = {}
  for k, v in example.items():
    if isinstance(v, dict):
      out |= _flatten(v, f"{prefix}{k}/")
    else:
      out[f"{prefix}{k}"] = v
  return out


def _raw_source(data_cfg, split):
  """Like data_source, but images stay encoded: the loader's decode op checks them."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _, builder = _builder(data_cfg)
  decoders = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
              if isinstance(f, tfds.features.Image)}
  return builder.as_data_source(split=split, decoders=decoders or None)


# Host-batch keys each modality's preprocessing must produce (plus label and image_id), in
# the model's modality order.
BATCH_KEYS = {"image": ("image",), "text": ("text_ids", "text_mask"),
              "audio": ("audio", "audio_mask")}
_DTYPES = {"image": np.uint8, "text_ids": np.int32, "text_mask": bool, "audio": np.float32,
           "audio_mask": bool}


def default_pp(data_cfg, modalities, channels, *, train):
  """The standard recipe as an op string (mmjax.data.ops): what data.pp_train / data.pp_eval
  mean when left empty. Checks first, then decode / tokenize / crop or pad; random audio
  offset and gain in training when data.augment."""
  ops = []
  if "image" in modalities:
    ops.append(f"decode(channels={channels})")
  if "text" in modalities:
    ops += ["check_text", f"tokenize({data_cfg.text_len})"]
  if "audio" in modalities:
    length = round(data_cfg.audio_seconds * data_cfg.sample_rate)
    ops += ["check_audio", "to_float"]
    ops += ([f"random_crop_or_pad({length})", "random_gain({}, {})".format(*_GAIN_DB)]
            if train and data_cfg.augment else [f"crop_or_pad({length})"])
  return "|".join(ops + ["cast('int32', 'label')", "cast('int32', 'image_id')"])


def _pipeline(data_cfg, modalities, channels, vocab_file, *, train):
  """(ops.Pipeline, the keys it must produce) for training or evaluation."""
  where = "data.pp_train" if train else "data.pp_eval"
  spec = data_cfg[where[5:]] or default_pp(data_cfg, modalities, channels, train=train)
  known = standard.DATASETS.get(data_cfg.name)
  if known and known.adapter:
    spec = f"{known.adapter}|{spec}"
  context = {"sample_rate": data_cfg.sample_rate, "min_audio_seconds": data_cfg.min_audio_seconds,
             "tokenizer_factory": lambda n: text_tokenizer.WordPieceTokenizer(vocab_file, n)}
  keys = [k for m in modalities for k in BATCH_KEYS[m]] + ["label", "image_id"]
  return ops_lib.build(spec, context, where=where), keys


def _finish(example, keys, shapes, where):
  """The batch keys of a preprocessed example, each checked against `shapes` (a key the
  pipeline does not make is the config's fault; another shape is the example's)."""
  missing = [k for k in keys if k not in example]
  if missing:
    raise UserError(f"{where} does not produce {missing}, which batches need; it makes "
                    f"{sorted(example)}.")
  out = {k: np.asarray(example[k]) for k in keys}
  for k, shape in (shapes or {}).items():
    if out[k].shape != shape:
      raise preprocess.BadExample(f"{k!r} is {list(out[k].shape)} after {where}, but batches "
                                  f"hold {list(shape)} (resize / crop_or_pad in {where}?)")
  return out


class _Reader:
  """Example `index` of a split, read and preprocessed by data.pp_train / pp_eval; raises
  preprocess.BadExample for an example that cannot be used.

  `modalities`: what this dataset has (default: all of info.modalities). Examples get zeros for
  the rest of info.modalities, and has_<modality> says which are real."""

  def __init__(self, data_cfg, info, split, *, train, modalities=None):
    self._data_cfg = data_cfg
    self.source = _raw_source(data_cfg, split)
    self.name, self.split, self.policy = data_cfg.name, split, data_cfg.on_bad_example
    own = modalities or info.modalities
    self._pipeline, self._keys = _pipeline(data_cfg, own, info.image_shape[-1],
                                           info.vocab_file, train=train)
    self._where = self._pipeline.where
    shapes = batch_shapes(info)
    self._shapes = {k: shapes[k] for m in own for k in BATCH_KEYS[m]}
    self._fill = {k: np.zeros(shapes[k], _DTYPES[k]) for k in shapes if k not in self._shapes}
    if presence_needed(info):
      self._fill |= {presence_key(m): np.bool_(m in own) for m in info.modalities}

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
      self.source = _raw_source(self._data_cfg, self.split)

  def __call__(self, index, rng=None):
    try:
      # Without labels (or image ids), an example is its own class.
      example = {"label": index, "image_id": index} | _flatten(self.source[index])
    except Exception as e:  # A record the dataset's own decoders cannot read.
      raise preprocess.BadExample(f"the stored record does not decode ({type(e).__name__}: "
                                  f"{e})") from None
    example = self._pipeline(example, rng if rng is not None else np.random.default_rng(index))
    return (_finish(example, self._keys, self._shapes, self._where) | self._fill
            | {"index": np.int32(index)})

  def bad(self, index, error):
    """Handles a bad example: raises UserError (policy 'error') or logs it ('skip')."""
    where = f"{self.name} {self.split} example {index}: {error}"
    if self.policy == "error":
      raise UserError(f"{where}. Fix or remove it, or set --config.data.on_bad_example=skip "
                      "to skip bad examples and count them.")
    logging.log_first_n(logging.WARNING, "Skipping %s.", 20, where)


class _ReadOrReplace:
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
      except preprocess.BadExample as e:
        self._reader.bad(index, e)
      skipped += 1
      if skipped >= _MAX_BAD_IN_A_ROW:
        raise UserError(f"{self._reader.name} {self._reader.split}: {skipped} bad examples "
                        "in a row; the dataset looks broken (see the warnings above).")
      index = int(rng.integers(len(self._reader)))


def labelled_subset(reader, per_class, seed):
  """Sorted indices of `per_class` examples of each class of the reader's split, drawn at random
  from `seed` (the same draw for every process). A class with fewer examples gives them all."""
  if "label" not in reader.source[0]:
    raise UserError(f"data.labels_per_class={per_class}: {reader.name} {reader.split} has no "
                    "class labels.")
  labels = np.array([int(reader.source[i]["label"]) for i in range(len(reader))])
  rng = np.random.default_rng(seed)
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
  return np.sort(np.concatenate(chosen)).tolist()


def _tag_source(example, source):
  return example | {"source": np.int32(source)}


def batch_shapes(info):
  """{batch key: per-example shape} of a prepared dataset."""
  shapes = {"image": info.image_shape, "text_ids": (info.text_len,),
            "text_mask": (info.text_len,), "audio": (info.audio_len,),
            "audio_mask": (info.audio_len,)}
  return {k: shapes[k] for m in info.modalities for k in BATCH_KEYS[m]}


def _shard(process_index, process_count):
  import jax  # pylint: disable=g-import-not-at-top
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


class _ProcessRows(grain.MapDataset):
  """This process's rows of every global batch: element j is element
  (j // b) * B + p * b + j % b of the global stream (B global, b = B / P per process)."""

  def __init__(self, parent, global_batch_size, process_index, process_count):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local

  def __len__(self):
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._offset + row]


def train_loader(data_cfg, info, *, global_batch_size, seed, process_index=None,
                 process_count=None):
  """An endless, shuffled stream of this process's share of every global batch.

  The global stream (shuffle order, epochs and augmentation) depends only on `seed`: global
  batch t is stream elements [t*B, (t+1)*B), and process p reads, decodes and preprocesses only
  its rows [p*B/P, (p+1)*B/P) of it. So every process count and every mesh sees the same global
  batches, and a run can resume on a different number of hosts. `iter(loader)` is a grain
  DatasetIterator whose get_state()/set_state() resume it exactly.
  """
  process_index, process_count = _shard(process_index, process_count)
  if not 0 <= seed < 2**32:
    raise UserError(f"seed={seed}: grain's shuffle needs a seed in [0, 2**32).")
  if global_batch_size % process_count:
    raise UserError(f"batch_size={global_batch_size} must be divisible by the number of "
                    f"processes ({process_count}).")
  components = mixture_components(data_cfg, info)
  streams = []
  for i, (cfg, _) in enumerate(components):
    reader = _Reader(cfg, info, cfg.train_split, train=True,
                     modalities=info.entry_modalities[i] if info.entry_modalities else None)
    subset = labelled_subset(reader, cfg.labels_per_class, seed) if cfg.labels_per_class else None
    if len(reader) < global_batch_size and len(components) == 1 and subset is None:
      raise UserError(f"{info.name} train split has {len(reader)} examples, fewer than "
                      f"batch_size={global_batch_size}; use a larger dataset (data.max_images).")
    # Each entry of a mixture gets its own seed, derived from `seed`.
    part_seed = seed if len(components) == 1 else int(
        np.random.SeedSequence((seed, i)).generate_state(1)[0])
    # A fresh permutation of the whole split every epoch (repeat reseeds the shuffle per
    # epoch); random ops are seeded by the element's position in the stream.
    ds = (grain.MapDataset.range(len(reader)) if subset is None
          else grain.MapDataset.source(subset))
    ds = ds.shuffle(seed=part_seed).repeat(None)
    ds = ds.map_with_index(_ReadOrReplace(reader, part_seed))
    streams.append(ds.map(functools.partial(_tag_source, source=i)))
  # Entries interleave in proportion to their weights (grain's deterministic mix).
  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(
      streams, [w for _, w in components])
  ds = _ProcessRows(ds, global_batch_size, process_index, process_count)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  # grain's default 16 reader threads fight over the GIL for records that take microseconds to
  # read (1.5x slower here); data.num_workers processes are the way to scale up.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=64))
  if data_cfg.num_workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  return ds


def split_batches(data_cfg, info, split, batch_size):
  """Yields all of `split` once, in stored order, in batches of exactly batch_size.

  No augmentation. The last batch is filled up by repeating its first row, with
  valid bool[B] False on the filler rows. Bad examples raise UserError or, with
  data.on_bad_example='skip', are left out.
  """
  if split not in info.split_sizes:
    raise UserError(f"{info.name} has no split {split!r}; it has {sorted(info.split_sizes)}.")
  if batch_size <= 0:
    raise UserError(f"The evaluation batch_size must be positive, got {batch_size}.")
  reader = _Reader(data_cfg, info, split, train=False, modalities=info.data_modalities)

  def examples():
    for index in range(len(reader)):
      try:
        yield reader(index)
      except preprocess.BadExample as e:
        reader.bad(index, e)

  it = examples()
  while rows := list(itertools.islice(it, batch_size)):
    valid = np.arange(batch_size) < len(rows)
    rows += [rows[0]] * (batch_size - len(rows))
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["valid"] = valid
    yield batch
