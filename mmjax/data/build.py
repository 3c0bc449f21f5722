r"""Builds a TFDS dataset (ArrayRecord) from your own paired files, listed in a manifest.

  python -m mmjax.data.build --manifest=pairs.jsonl --name=my_pairs --data_dir=~/mmjax_data

The manifest is JSONL (one object per line) or CSV (a header line), one row per example, with
any subset of the columns
  image   path of an image file (PNG, JPEG, ... anything PIL reads)
  audio   path of a WAV file (PCM or float; stereo is averaged)
  text    the caption or transcript
  label   a class name (optional)
  split   'train', 'validation' or 'test' (optional: otherwise assigned at random, see flags)
Paths are relative to the manifest's folder, and must stay inside it.

Every row is checked before anything is written, with a progress bar: files exist and decode,
text is non-empty UTF-8, audio is not silent or shorter than --min_audio_seconds, every row has
every modality the manifest has. Images are resized (shorter side) and centre-cropped to
--image_size; audio is resampled to --sample_rate. Rows that fail are left out and reported
with the reason, on the console and in <data_dir>/<name>_rejected.jsonl. The dataset is then
trained on by name: --config.data.name=my_pairs --config.data.dir=<data_dir>
--config.data.sample_rate=<sample_rate>.
"""
import csv
import dataclasses
import io
import json
import os
import sys

import numpy as np
import tqdm
from absl import app
from absl import flags
from absl import logging

from mmjax.data import preprocess
from mmjax.errors import UserError

MODALITIES = ("image", "text", "audio")
COLUMNS = {"image", "audio", "text", "label", "split"}
SPLITS = ("train", "validation", "test")
VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class Options:
  image_size: int = 64
  channels: int = 3
  sample_rate: int = 16000
  min_audio_seconds: float = 0.1
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  seed: int = 0


def read_manifest(path):
  """The manifest's rows as dicts (JSONL or CSV, by extension)."""
  if not os.path.isfile(path):
    raise UserError(f"--manifest={path!r}: no such file.")
  with open(path, encoding="utf-8") as f:
    if path.endswith((".jsonl", ".json")):
      rows = []
      for number, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {number}: not JSON ({e.msg}).") from None
    elif path.endswith(".csv"):
      rows = list(csv.DictReader(f))
    else:
      raise UserError(f"--manifest={path!r}: use a .jsonl or a .csv file.")
  if not rows:
    raise UserError(f"--manifest={path!r} has no rows.")
  unknown = set().union(*rows) - COLUMNS
  if unknown:
    raise UserError(f"{path}: unknown columns {sorted(unknown)}; use {sorted(COLUMNS)}.")
  return rows


def _inside(root, relative):
  """The real path of `relative` under `root`; BadExample if it escapes `root`."""
  path = os.path.realpath(os.path.join(root, relative))
  if os.path.commonpath([path, root]) != root:
    raise preprocess.BadExample(f"path {relative!r} is outside the manifest's folder")
  if not os.path.isfile(path):
    raise preprocess.BadExample(f"file {relative!r} does not exist")
  return path


def _image(path, opts):
  """PNG bytes of the image at `path`: shorter side resized to opts.image_size, centre crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert("L" if opts.channels == 1 else "RGB")
  except Exception as e:  # PIL raises several types for broken files.
    raise preprocess.BadExample(f"image {os.path.basename(path)!r} does not decode ({e})") \
        from None
  size = opts.image_size
  scale = size / min(image.size)
  w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
  image = image.resize((w, h), Image.Resampling.BICUBIC)
  left, top = (w - size) // 2, (h - size) // 2
  buf = io.BytesIO()
  image.crop((left, top, left + size, top + size)).save(buf, format="PNG")
  return buf.getvalue()


def _audio(path, opts):
  """int16 waveform of the WAV file at `path`, mono, resampled to opts.sample_rate."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  from scipy.io import wavfile  # pylint: disable=g-import-not-at-top
  try:
    rate, wave = wavfile.read(path)
  except Exception as e:  # scipy raises ValueError and others for broken files.
    raise preprocess.BadExample(f"audio {os.path.basename(path)!r} is not a readable WAV file "
                                f"({e})") from None
  wave = np.asarray(wave)
  if wave.dtype.kind in "iu":
    info = np.iinfo(wave.dtype)
    wave = (wave.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max + 1 - (
        info.max + info.min + 1) / 2)
  wave = wave.astype(np.float64)
  if wave.ndim == 2:
    wave = wave.mean(axis=1)
  if rate != opts.sample_rate:
    g = np.gcd(rate, opts.sample_rate)
    wave = signal.resample_poly(wave, opts.sample_rate // g, rate // g)
  wave = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)
  preprocess.get_check_audio(opts.sample_rate, round(opts.min_audio_seconds * opts.sample_rate))(
      {"audio": wave})
  return wave


def split_of(row, number, opts):
  """The row's split: its 'split' column, or drawn from (seed, row number)."""
  if row.get("split"):
    if row["split"] not in SPLITS:
      raise preprocess.BadExample(f"split {row['split']!r} is not one of {list(SPLITS)}")
    return row["split"]
  u = np.random.default_rng((opts.seed, number)).random()
  return ("test" if u < opts.test_fraction else
          "validation" if u < opts.test_fraction + opts.val_fraction else "train")


def example(row, root, modalities, labels, opts):
  """The stored example for a manifest row; preprocess.BadExample says why a row is unusable."""
  for m in modalities:
    if not row.get(m):
      raise preprocess.BadExample(f"no {m!r}, which other rows of the manifest have")
  out = {}
  if "image" in modalities:
    out["image"] = _image(_inside(root, row["image"]), opts)
  if "text" in modalities:
    out["caption"] = preprocess.get_check_text("text")({"text": row["text"]})["text"]
  if "audio" in modalities:
    out["audio"] = _audio(_inside(root, row["audio"]), opts)
    out["sample_rate"] = opts.sample_rate
  if labels:
    if not row.get("label"):
      raise preprocess.BadExample("no 'label', which other rows of the manifest have")
    out["label"] = labels.index(str(row["label"]))
  return out


def features(modalities, labels, opts):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = {}
  if "image" in modalities:
    spec["image"] = tfds.features.Image(shape=(opts.image_size, opts.image_size, opts.channels))
  if "text" in modalities:
    spec["caption"] = tfds.features.Text()
  if "audio" in modalities:
    # Raw bytes, not an int64 list (10 bytes per negative sample); the rate goes with each
    # example, and the loader checks it against data.sample_rate.
    spec["audio"] = tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                         encoding=tfds.features.Encoding.BYTES)
    spec["sample_rate"] = tfds.features.Scalar(dtype=np.int32)
  if labels:
    spec["label"] = tfds.features.ClassLabel(names=labels)
  return tfds.features.FeaturesDict(spec)


def _manifest_builder_class():
  """TFDS's builder for in-memory / generated splits (what tfds.dataset_builders.
  store_as_tfds_dataset uses), told where its code is: TFDS 4.9.10 otherwise looks it up
  through a module it no longer installs (tensorflow/datasets#11212)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class ManifestBuilder(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
    code_path = epath.Path(__file__)

  return ManifestBuilder


def build(manifest, name, data_dir, opts=Options()):
  """Checks every row of `manifest` and writes the good ones as TFDS dataset `name` under
  `data_dir`. Returns (builder, {split: rows kept}, [rejected rows with their 'reason'])."""
  if not (name.isidentifier() and name == name.lower() and not name.startswith("mmjax_")):
    raise UserError(f"--name={name!r}: use lowercase letters, digits and '_' (a TFDS name), "
                    "not starting with 'mmjax_' (the built-in datasets).")
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  if os.path.exists(os.path.join(data_dir, name)):
    raise UserError(f"{os.path.join(data_dir, name)} already exists; choose another --name or "
                    "delete it to rebuild.")
  rows = read_manifest(manifest)
  root = os.path.realpath(os.path.dirname(os.path.abspath(manifest)))
  modalities = [m for m in MODALITIES if any(row.get(m) for row in rows)]
  if not modalities:
    raise UserError(f"{manifest}: no row has an image, audio or text.")
  labels = sorted({str(row["label"]) for row in rows if row.get("label")})
  kept, rejected = {s: 0 for s in SPLITS}, []
  progress = tqdm.tqdm(total=len(rows), desc=f"Checking and writing {name}", unit="row")
  by_split = {s: [] for s in SPLITS}
  for number, row in enumerate(rows, 1):
    try:
      by_split[split_of(row, number, opts)].append(number)
    except preprocess.BadExample as e:
      rejected.append({"row": number, "reason": str(e), **row})
      progress.update()

  def generate(split):
    for number in by_split[split]:
      row = rows[number - 1]
      try:
        ex = example(row, root, modalities, labels, opts)
      except preprocess.BadExample as e:
        rejected.append({"row": number, "reason": str(e), **row})
      else:
        kept[split] += 1
        yield number, ex
      progress.update()

  builder = _manifest_builder_class()(
      name=name, version=VERSION, features=features(modalities, labels, opts),
      split_datasets={s: generate(s) for s in SPLITS if by_split[s]}, data_dir=data_dir,
      description=f"Built by mmjax.data.build from {os.path.abspath(manifest)}.")
  builder.download_and_prepare(file_format="array_record")
  progress.close()
  rejected.sort(key=lambda r: r["row"])
  with open(os.path.join(data_dir, f"{name}_rejected.jsonl"), "w", encoding="utf-8") as f:
    for r in rejected:
      f.write(json.dumps(r) + "\n")
  return builder, kept, rejected


_MANIFEST = flags.DEFINE_string("manifest", None, "JSONL or CSV manifest of paired files.")
_NAME = flags.DEFINE_string("name", None, "Dataset name, e.g. my_pairs.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where datasets live (config.data.dir).")
flags.DEFINE_integer("image_size", Options.image_size, "Images become size x size.")
flags.DEFINE_integer("channels", Options.channels, "1 (grayscale) or 3 (RGB).")
flags.DEFINE_integer("sample_rate", Options.sample_rate, "Audio is resampled to this rate (Hz).")
flags.DEFINE_float("min_audio_seconds", Options.min_audio_seconds, "Shorter audio is rejected.")
flags.DEFINE_float("val_fraction", Options.val_fraction, "Rows without a split: validation.")
flags.DEFINE_float("test_fraction", Options.test_fraction, "Rows without a split: test.")
flags.DEFINE_integer("seed", Options.seed, "Seeds the split assignment.")


def main(argv):
  del argv
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it writes.
  tfds.disable_progress_bar()  # Ours counts rows.
  opts = Options(**{f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(Options)})
  try:
    _, kept, rejected = build(_MANIFEST.value, _NAME.value, _DATA_DIR.value, opts)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Kept {sum(kept.values())} rows ({', '.join(f'{s} {n}' for s, n in kept.items())}); "
        f"rejected {len(rejected)}.")
  for r in rejected[:20]:
    print(f"  row {r['row']}: {r['reason']}")
  if rejected:
    print(f"All rejected rows: {os.path.join(os.path.expanduser(_DATA_DIR.value), _NAME.value)}"
          "_rejected.jsonl")


if __name__ == "__main__":
  flags.mark_flags_as_required(["manifest", "name", "data_dir"])
  app.run(main)
