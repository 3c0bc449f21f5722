r"""Builds a TFDS dataset (ArrayRecord) from your own paired files, listed in a manifest.

  python -m mmjax.data.build --manifest=pairs.jsonl --name=my_pairs --data_dir=~/mmjax_data

The manifest is JSONL (one object per line) or CSV (a header line), UTF-8 (a byte-order mark
is fine), one row per example, with any subset of the columns
  image   path of an image file (PNG, JPEG, ... anything PIL reads)
  audio   path of a WAV file (PCM or float; stereo is averaged)
  text    the caption or transcript
  label   a class name (optional; in JSON a string or an integer)
  split   'train', 'validation' or 'test' (optional: otherwise assigned at random, see flags)
Paths are relative to the manifest's folder, and must stay inside it.

Every row is checked before anything is written, with a progress bar: values are strings (a
list or a number is not), text is non-empty UTF-8, files exist and decode, images have at most
--max_image_pixels pixels (read from the header, before decoding), audio is not silent, not
shorter than --min_audio_seconds and not longer than --max_audio_seconds, every row has every
modality the manifest has, and no row repeats an earlier row's files and text. Images are
resized (shorter side) and centre-cropped to --image_size; audio is resampled to
--sample_rate. Rows that fail are left out and reported with the reason and their line, on
the console and in <data_dir>/<name>_rejected.jsonl; a file with an unusual extension that
decodes is kept, with a note on the console.

What stops the build instead, with one message naming the line: a line of a JSONL manifest
that is not JSON, a CSV record that does not parse, an unknown column, and bytes that are not
UTF-8 where they break the file's structure (a JSON key or syntax, the CSV header). Bytes that
are not UTF-8 inside one value (a caption, a path) only reject that row, so one bad caption
does not stop a large build. A split whose rows are all rejected is left out; a manifest
without one usable row stops the build too (after writing the report).

The dataset is written into a temporary folder beside it (<data_dir>/.<name>.tmp-<host>-<pid>)
and renamed to <data_dir>/<name> when complete, so a build that stops halfway leaves no
<data_dir>/<name>; the next build of that name removes folders left by killed builds on this
host. It is then trained on by name: --config.data.name=my_pairs --config.data.dir=<data_dir>
--config.data.sample_rate=<sample_rate>.
"""
import csv
import dataclasses
import io
import itertools
import json
import os
import re
import shutil
import socket
import sys
from typing import Any, NamedTuple

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
AUDIO_EXTENSIONS = (".wav", ".wave")
# Bytes that are not UTF-8 read as these (errors="surrogateescape"); a JSON escape such as
# "\ud800" gives the rest of the surrogate range.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_SAMPLE_RATE = 384_000  # Higher rates are a broken header, and their resampling is slow.


@dataclasses.dataclass(frozen=True)
class Options:
  image_size: int = 64
  channels: int = 3
  sample_rate: int = 16000
  min_audio_seconds: float = 0.1
  max_audio_seconds: float = 600.0
  max_image_pixels: int = 89_478_485  # PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS).
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  seed: int = 0


class ManifestRow(NamedTuple):
  line: int  # Where the row starts in the manifest (1-based).
  value: Any  # A dict for a well-formed row; JSONL may hold any JSON value.
  bad_bytes: bool  # The row's text held bytes that are not UTF-8 (now U+DC80..U+DCFF).


def _not_utf8(path, line, text):
  """UserError for the first byte of `text` (read with surrogateescape) that is not UTF-8."""
  bad = _BAD_BYTE.search(text)
  return UserError(f"{path}, line {line}, column {bad.start() + 1}: byte "
                   f"{ord(bad.group()) - 0xdc00:#04x} is not UTF-8; save the manifest as UTF-8.")


def _unknown_columns(path, line, columns):
  unknown = set(columns) - COLUMNS
  if unknown:
    raise UserError(f"{path}, line {line}: unknown columns {sorted(unknown)}; use "
                    f"{sorted(COLUMNS)}.")


def _read_jsonl(path, f):
  rows = []
  for number, line in enumerate(f, 1):
    if not line.strip():
      continue
    bad_bytes = bool(_BAD_BYTE.search(line))
    try:
      value = json.loads(line)
    # ValueError: also integers of over 4300 digits; RecursionError: nesting.
    except (ValueError, RecursionError) as e:
      if bad_bytes:  # The likelier cause.
        raise _not_utf8(path, number, line) from None
      raise UserError(f"{path}, line {number}: not JSON ({getattr(e, 'msg', e)}).") from None
    if isinstance(value, dict):
      if bad_bytes and any(_BAD_BYTE.search(k) for k in value):
        raise _not_utf8(path, number, line)
      _unknown_columns(path, number, value)
    rows.append(ManifestRow(number, value, bad_bytes))
  return rows


def _read_csv(path, f):
  reader = csv.reader(f, strict=True)  # Strict: an unclosed quote is an error, not a swallow.
  start = 1  # The line the record being read starts on.
  try:
    header = next(reader, [])
    if any(_BAD_BYTE.search(h) for h in header):
      raise _not_utf8(path, 1, ",".join(header))
    if len(set(header)) != len(header):
      raise UserError(f"{path}, line 1: the header repeats a column ({header}).")
    _unknown_columns(path, 1, header)
    rows = []
    start = reader.line_num + 1
    for fields in reader:
      if fields:  # Not a blank line.
        row = dict(zip(header, fields))
        if len(fields) > len(header):
          row[None] = fields[len(header):]  # As csv.DictReader does.
        rows.append(ManifestRow(start, row, any(_BAD_BYTE.search(x) for x in fields)))
      start = reader.line_num + 1
  except csv.Error as e:
    raise UserError(f"{path}, line {start}: not valid CSV ({e}).") from None
  return rows


def read_manifest(path):
  """The manifest's rows, [ManifestRow] (JSONL or CSV, by extension); UserError for a file
  that cannot be read, naming the line."""
  if not os.path.isfile(path):
    raise UserError(f"--manifest={path!r}: no such file.")
  if not path.endswith((".jsonl", ".json", ".csv")):
    raise UserError(f"--manifest={path!r}: use a .jsonl or a .csv file.")
  with open(path, "rb") as f:
    if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
      raise UserError(f"--manifest={path!r} is UTF-16; save it as UTF-8.")
  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is skipped. Bad bytes are kept as
  # surrogates, so that one bad caption rejects its row, not the file.
  with open(path, encoding="utf-8-sig", errors="surrogateescape",
            newline="" if path.endswith(".csv") else "\n") as f:
    rows = _read_csv(path, f) if path.endswith(".csv") else _read_jsonl(path, f)
  if not rows:
    raise UserError(f"--manifest={path!r} has no rows.")
  return rows


def _json_type(value):
  return ("null" if value is None else "boolean" if isinstance(value, bool) else
          "number" if isinstance(value, (int, float)) else "list" if isinstance(value, list)
          else "object" if isinstance(value, dict) else type(value).__name__)


def _typed(row):
  """{column: str} of a ManifestRow's non-empty values; BadExample for a row that is not an
  object, has more CSV fields than the header, or holds a value that is not a string (an
  integer label becomes one) or not valid text."""
  if not isinstance(row.value, dict):
    raise preprocess.BadExample(f"a JSON {_json_type(row.value)}, not an object")
  if None in row.value:
    raise preprocess.BadExample(f"{len(row.value[None])} more field(s) than the header")
  out = {}
  for column, value in row.value.items():
    if column == "label" and isinstance(value, int) and not isinstance(value, bool):
      value = str(value)
    if value is None or value == "":
      continue  # As if absent.
    if not isinstance(value, str):
      raise preprocess.BadExample(f"{column!r} is a JSON {_json_type(value)}, not a string")
    surrogate = _SURROGATE.search(value)
    if surrogate and row.bad_bytes and _BAD_BYTE.match(surrogate.group()):
      raise preprocess.BadExample(f"{column!r} is not UTF-8 (byte "
                                  f"{ord(surrogate.group()) - 0xdc00:#04x} at character "
                                  f"{surrogate.start() + 1})")
    if surrogate:
      raise preprocess.BadExample(f"{column!r} holds an unpaired surrogate "
                                  f"(U+{ord(surrogate.group()):04X} at character "
                                  f"{surrogate.start() + 1}), which is not text")
    if column == "label":
      # TFDS stores class names one per line, stripped: keep them as they will read back.
      value = value.strip()
      if "\n" in value or "\r" in value:
        raise preprocess.BadExample(f"'label' {value!r} holds a line break")
      if not value:
        continue
    out[column] = value
  return out


def _inside(root, relative):
  """The real path of `relative` under `root`; BadExample if it escapes `root`."""
  try:
    path = os.path.realpath(os.path.join(root, relative))
  except ValueError:  # A NUL character.
    raise preprocess.BadExample(f"path {relative!r} is not a valid path") from None
  if os.path.commonpath([path, root]) != root:
    raise preprocess.BadExample(f"path {relative!r} is outside the manifest's folder")
  if not os.path.isfile(path):
    raise preprocess.BadExample(f"file {relative!r} does not exist")
  return path


def _located(row, root, modalities, labelled):
  """The checks that need no decoding: the row has every modality (and a label if any row
  has), its files are inside `root` and exist, its text is non-empty. Returns the row with
  real paths."""
  for m in (*modalities, *(("label",) if labelled else ())):
    if m not in row:
      raise preprocess.BadExample(f"no {m!r}, which other rows of the manifest have")
  out = dict(row)
  for m in ("image", "audio"):
    if m in modalities:
      out[m] = _inside(root, row[m])
  if "text" in modalities:
    preprocess.get_check_text("text")({"text": row["text"]})
  return out


def _extension_note(kind, path, known, read_as):
  ext = os.path.splitext(path)[1].lower()
  if ext not in known:
    return (f"{kind} {os.path.basename(path)!r}: unknown extension {ext or '(none)'!r}, read "
            f"as {read_as}")
  return None


def _image(path, opts):
  """(PNG bytes, format it was read as) of the image at `path`: shorter side resized to
  opts.image_size, centre crop. Its size is checked from the header, before decoding."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path)
  size = opts.image_size
  # PIL's own limit only warns below twice its value: ours replaces it.
  pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
  try:
    with Image.open(path) as image:
      (w, h), image_format = image.size, image.format
      if w * h > opts.max_image_pixels:
        raise preprocess.BadExample(f"image {name!r} is {w}x{h}, {w * h} pixels, over "
                                    f"--max_image_pixels={opts.max_image_pixels}")
      if not w * h:
        raise preprocess.BadExample(f"image {name!r} is {w}x{h}, empty")
      # The resized image before the crop: bounded too, for extreme aspect ratios.
      scale = size / min(w, h)
      w, h = max(size, round(w * scale)), max(size, round(h * scale))
      if w * h > max(opts.max_image_pixels, size * size):
        raise preprocess.BadExample(f"image {name!r} is {image.width}x{image.height}: resized "
                                    f"to {w}x{h} before the centre crop, over "
                                    f"--max_image_pixels={opts.max_image_pixels}")
      image = image.convert("L" if opts.channels == 1 else "RGB")
  except preprocess.BadExample:
    raise
  except Exception as e:  # PIL raises several types for broken files.
    raise preprocess.BadExample(f"image {name!r} does not decode ({e})") from None
  finally:
    Image.MAX_IMAGE_PIXELS = pil_limit
  image = image.resize((w, h), Image.Resampling.BICUBIC)
  left, top = (w - size) // 2, (h - size) // 2
  buf = io.BytesIO()
  image.crop((left, top, left + size, top + size)).save(buf, format="PNG")
  return buf.getvalue(), image_format


def _read_wav(path):
  """(rate, samples) of a WAV file. A memory map reads only the header, so the length is
  known before the samples are read; 24-bit samples and truncated files need a full read."""
  from scipy.io import wavfile  # pylint: disable=g-import-not-at-top
  for mmap in (True, False):
    try:
      return wavfile.read(path, mmap=mmap)
    except Exception as e:  # scipy raises ValueError and others for broken files.
      error = e
  raise preprocess.BadExample(f"audio {os.path.basename(path)!r} is not a readable WAV file "
                              f"({error})")


def _audio(path, opts):
  """int16 waveform of the WAV file at `path`, mono, resampled to opts.sample_rate."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path)
  rate, wave = _read_wav(path)
  if not 1 <= rate <= _MAX_SAMPLE_RATE:
    raise preprocess.BadExample(f"audio {name!r} says it is sampled at {rate} Hz")
  if len(wave) > opts.max_audio_seconds * rate:
    raise preprocess.BadExample(f"audio {name!r} is {len(wave) / rate:.1f} s long, over "
                                f"--max_audio_seconds={opts.max_audio_seconds:g}")
  wave = np.asarray(wave)
  if wave.size == 0:
    raise preprocess.BadExample(f"audio {name!r} has no samples")
  if wave.dtype.kind in "iu":
    info = np.iinfo(wave.dtype)
    wave = (wave.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max + 1 - (
        info.max + info.min + 1) / 2)
  wave = wave.astype(np.float64)
  if not np.isfinite(wave).all():
    raise preprocess.BadExample(f"audio {name!r} holds NaN or infinite samples")
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


def example(row, label_ids, opts):
  """(stored example, notes) for a row that passed `_located`; preprocess.BadExample says why
  its files are unusable. Notes are about files kept (an unknown extension)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out, notes = {}, []
  if "image" in row:
    out["image"], image_format = _image(row["image"], opts)
    notes.append(_extension_note("image", row["image"], Image.registered_extensions(),
                                 image_format))
  if "text" in row:
    out["caption"] = row["text"]
  if "audio" in row:
    out["audio"] = _audio(row["audio"], opts)
    out["sample_rate"] = opts.sample_rate
    notes.append(_extension_note("audio", row["audio"], AUDIO_EXTENSIONS, "WAV"))
  if label_ids:
    out["label"] = label_ids[row["label"]]
  return out, [n for n in notes if n]
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

    # TFDS prints where it writes, our temporary folder; the build prints where it went.
    def _log_download_bytes(self):
      pass

    def _log_download_done(self):
      pass

  return ManifestBuilder


def _running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's.
    return True
  return True


def _temp_dir(data_dir, name):
  """A new empty folder to build `name` in, beside its final place: data_dir/.<name>.tmp-
  <host>-<pid>. Removes first those that builds of `name` on this host left when killed (their
  process is gone); another host's are left alone (data_dir may be shared)."""
  prefix = f".{name}.tmp-{socket.gethostname()}-"
  try:
    os.makedirs(data_dir, exist_ok=True)
    for entry in os.listdir(data_dir):
      pid = entry[len(prefix):]
      if entry.startswith(prefix) and pid.isdigit() and (
          int(pid) == os.getpid() or not _running(int(pid))):
        shutil.rmtree(os.path.join(data_dir, entry), ignore_errors=True)
    path = os.path.join(data_dir, f"{prefix}{os.getpid()}")
    os.mkdir(path)
  except OSError as e:
    raise UserError(f"--data_dir={data_dir!r}: cannot create a folder there ({e}).") from None
  return path


def _write_report(data_dir, name, rejected):
  """Sorts `rejected` by row and writes it to data_dir/<name>_rejected.jsonl (its path)."""
  rejected.sort(key=lambda r: r["row"])
  path = os.path.join(data_dir, f"{name}_rejected.jsonl")
  os.makedirs(data_dir, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for r in rejected:
      f.write(json.dumps(r) + "\n")
  return path


def _check_options(name, opts):
  if not (name.isidentifier() and name == name.lower() and not name.startswith("mmjax_")):
    raise UserError(f"--name={name!r}: use lowercase letters, digits and '_' (a TFDS name), "
                    "not starting with 'mmjax_' (the built-in datasets).")
  if opts.max_image_pixels < 1:
    raise UserError(f"--max_image_pixels={opts.max_image_pixels} must be positive.")
  if opts.max_audio_seconds <= 0 or opts.max_audio_seconds < opts.min_audio_seconds:
    raise UserError(f"--max_audio_seconds={opts.max_audio_seconds:g} must be positive and at "
                    f"least --min_audio_seconds={opts.min_audio_seconds:g}.")


def build(manifest, name, data_dir, opts=Options()):
  """Checks every row of `manifest` and writes the good ones as TFDS dataset `name` under
  `data_dir`. Returns (builder, {split: rows kept}, [rejected rows with their 'reason'],
  [notes on kept rows]); each rejected row and note has its 'row' (count of rows before it,
  plus one: it seeds the split) and its 'line' in the manifest."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _check_options(name, opts)
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  final_dir = os.path.join(data_dir, name)
  if os.path.exists(final_dir):
    raise UserError(f"{final_dir} already exists; choose another --name or delete it to "
                    "rebuild.")
  rows = read_manifest(manifest)
  root = os.path.realpath(os.path.dirname(os.path.abspath(manifest)))
  kept, rejected, notes = {s: 0 for s in SPLITS}, [], []
  progress = tqdm.tqdm(total=len(rows), desc=f"Checking and writing {name}", unit="row")

  def reject(number, reason):
    row = rows[number - 1]
    rejected.append({"row": number, "line": row.line, "reason": reason,
                     **(row.value if isinstance(row.value, dict) else {"value": row.value})})
    progress.update()

  def nothing_usable():
    progress.close()
    report = _write_report(data_dir, name, rejected)
    first = min(rejected, key=lambda r: r["row"])
    return UserError(f"{manifest}: none of its {len(rows)} rows is usable (line {first['line']}: "
                     f"{first['reason']}; all reasons in {report}).")

  # First the checks that decode nothing, in the manifest's order (the first of duplicates
  # stays); then the files, split by split, as TFDS writes them.
  typed = {}
  for number, row in enumerate(rows, 1):
    try:
      typed[number] = _typed(row)
    except preprocess.BadExample as e:
      reject(number, str(e))
  modalities = [m for m in MODALITIES if any(m in row for row in typed.values())]
  if not modalities:
    raise nothing_usable() if rejected else UserError(
        f"{manifest}: no row has an image, audio or text.")
  labels = sorted({row["label"] for row in typed.values() if "label" in row})
  by_split, first_line = {s: [] for s in SPLITS}, {}
  for number, row in typed.items():
    try:
      split = split_of(row, number, opts)
      row = _located(row, root, modalities, bool(labels))
      key = tuple(row.get(m) for m in MODALITIES)
      if key in first_line:
        raise preprocess.BadExample(f"duplicate of line {first_line[key]} (same files and "
                                    "text)")
      first_line[key] = rows[number - 1].line
    except preprocess.BadExample as e:
      reject(number, str(e))
    else:
      by_split[split].append((number, row))

  label_ids = {label: i for i, label in enumerate(labels)}

  def generate(split):
    for number, row in by_split[split]:
      try:
        ex, row_notes = example(row, label_ids, opts)
      except preprocess.BadExample as e:
        reject(number, str(e))
        continue
      kept[split] += 1
      notes.extend({"row": number, "line": rows[number - 1].line, "note": n}
                   for n in row_notes)
      progress.update()
      yield number, ex

  # TFDS cannot write an empty split: find each split's first good row before it starts.
  split_datasets = {}
  for split in SPLITS:
    examples = generate(split)
    first = next(examples, None)
    if first is not None:
      split_datasets[split] = itertools.chain([first], examples)
  if not split_datasets:
    raise nothing_usable()

  # Written beside its final place and renamed when complete: a build that stops halfway
  # leaves no data_dir/<name> to block the next (which removes the temporary folder).
  temp_dir = _temp_dir(data_dir, name)
  try:
    builder = _manifest_builder_class()(
        name=name, version=VERSION, features=features(modalities, labels, opts),
        split_datasets=split_datasets, data_dir=temp_dir,
        description=f"Built by mmjax.data.build from {os.path.abspath(manifest)}.")
    builder.download_and_prepare(file_format="array_record")
    progress.close()
    if os.path.exists(final_dir):
      raise UserError(f"{final_dir} was created by someone else during this build; choose "
                      "another --name or delete it to rebuild.")
    os.rename(os.path.join(temp_dir, name), final_dir)
  finally:
    shutil.rmtree(temp_dir, ignore_errors=True)
  _write_report(data_dir, name, rejected)
  notes.sort(key=lambda r: r["row"])
  return tfds.builder(name, data_dir=data_dir), kept, rejected, notes


_MANIFEST = flags.DEFINE_string("manifest", None, "JSONL or CSV manifest of paired files.")
_NAME = flags.DEFINE_string("name", None, "Dataset name, e.g. my_pairs.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where datasets live (config.data.dir).")
flags.DEFINE_integer("image_size", Options.image_size, "Images become size x size.")
flags.DEFINE_integer("channels", Options.channels, "1 (grayscale) or 3 (RGB).")
flags.DEFINE_integer("sample_rate", Options.sample_rate, "Audio is resampled to this rate (Hz).")
flags.DEFINE_float("min_audio_seconds", Options.min_audio_seconds, "Shorter audio is rejected.")
flags.DEFINE_float("max_audio_seconds", Options.max_audio_seconds, "Longer audio is rejected.")
flags.DEFINE_integer("max_image_pixels", Options.max_image_pixels,
                     "Images with more pixels (width x height, from the file's header) are "
                     "rejected before decoding. The default is PIL's decompression-bomb limit.")
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
    _, kept, rejected, notes = build(_MANIFEST.value, _NAME.value, _DATA_DIR.value, opts)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Kept {sum(kept.values())} rows ({', '.join(f'{s} {n}' for s, n in kept.items())}) in "
        f"{os.path.join(os.path.expanduser(_DATA_DIR.value), _NAME.value)}; rejected "
        f"{len(rejected)}.")
  for r in rejected[:20]:
    print(f"  line {r['line']}: {r['reason']}")
  if rejected:
    print(f"All rejected rows: {os.path.join(os.path.expanduser(_DATA_DIR.value), _NAME.value)}"
          "_rejected.jsonl")
  if notes:
    print(f"Kept, but note ({len(notes)}):")
    for n in notes[:20]:
      print(f"  line {n['line']}: {n['note']}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["manifest", "name", "data_dir"])
  app.run(main)
