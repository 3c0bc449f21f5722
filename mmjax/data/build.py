r"""Builds a TFDS dataset (ArrayRecord) from your own paired files, listed in a manifest.

  python -m mmjax.data.build --manifest=pairs.jsonl --name=my_pairs --data_dir=~/mmjax_data

The manifest is JSONL (one object per line) or CSV (a header line), UTF-8 (a byte-order mark
is fine), one row per example, with any subset of the columns
  image   path of an image file (PNG, JPEG, ... anything PIL reads)
  audio   path of a WAV file (PCM or float; stereo is averaged)
  text    the caption or transcript
  label   a class name (optional; in JSON a string or an integer)
  split   'train', 'validation' or 'test' (optional: otherwise drawn at random, see flags)
  group   rows that share a split (optional; in JSON a string or an integer)
Paths are relative to the manifest's folder, and must stay inside it.

Rows are split by group, so that no image is in two splits (an image with five captions is
five rows): a row's group is its 'group' value, else its image file, else its audio file
(else the row alone). A group takes the 'split' of its first row that has one (a row whose
'split' says otherwise is rejected), else one drawn from (--seed, group). The build reports
the rows and groups of each split, also saved with the dataset (builder.info.metadata).

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
import dataclasses
import itertools
import json
import os
import shutil
import socket
import sys

import tqdm
from absl import app
from absl import flags
from absl import logging

from mmjax import modality as modality_lib
from mmjax.data import manifest as manifest_lib
from mmjax.data import ops
from mmjax.errors import UserError
from mmjax.paths import expand_path

SPLITS = manifest_lib.SPLITS
VERSION = "1.0.0"


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


def _inside(root, relative):
  """The real path of `relative` under `root`; BadExample if it escapes `root`."""
  try:
    path = os.path.realpath(os.path.join(root, relative))
  except ValueError:  # A NUL character.
    raise ops.BadExample(f"path {relative!r} is not a valid path") from None
  if os.path.commonpath([path, root]) != root:
    raise ops.BadExample(f"path {relative!r} is outside the manifest's folder")
  if not os.path.isfile(path):
    raise ops.BadExample(f"file {relative!r} does not exist")
  return path


def _located(row, root, modalities, labelled, opts):
  """The checks that need no decoding: the row has every modality (and a label if any row
  has), its files are inside `root` and exist, its text is valid. Returns the row with real
  paths."""
  for m in (*modalities, *(("label",) if labelled else ())):
    if m not in row:
      raise ops.BadExample(f"no {m!r}, which other rows of the manifest have")
  out = dict(row)
  for m in modalities:
    if modality_lib.get(m).reads_file:
      out[m] = _inside(root, row[m])
    else:
      modality_lib.get(m).read(row[m], opts)
  return out


def example(row, label_ids, opts):
  """(stored example, notes) for a row that passed `_located`; ops.BadExample says why its
  files are unusable. Notes are about files kept (an unknown extension)."""
  out, notes = {}, []
  for m in modality_lib.ordered(set(row) & set(modality_lib.names())):
    stored, note = modality_lib.get(m).read(row[m], opts)
    out |= stored
    notes.append(note)
  if label_ids:
    out["label"] = label_ids[row["label"]]
  return out, [n for n in notes if n]


def features(modalities, labels, opts):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  spec = {}
  for m in modalities:
    spec |= modality_lib.get(m).build_features(opts)
  if labels:
    spec["label"] = tfds.features.ClassLabel(names=labels)
  return tfds.features.FeaturesDict(spec)


def _manifest_builder_class():
  """TFDS's builder for in-memory / generated splits (what tfds.dataset_builders.
  store_as_tfds_dataset uses), told where its code is: TFDS 4.9.10 otherwise looks it up
  through a module it no longer installs (tensorflow/datasets#11212). Its `metadata` (a dict
  filled while the splits are written) is saved with the dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class ManifestBuilder(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
    code_path = epath.Path(__file__)

    def __init__(self, *, metadata, **kwargs):
      self._metadata = metadata
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, description=self._description,
                                   features=self._feature_spec, metadata=self._metadata)

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
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if name in tfds.list_builders(with_community_datasets=False):
    # Training opens a name through TFDS, which finds its own builder for a registered name
    # (another version and features), never this build.
    raise UserError(f"--name={name!r} is a dataset of the TFDS catalog, so training on it would "
                    f"look for TFDS's {name!r}, not this build; choose another name, e.g. "
                    f"'my_{name}'.")
  if opts.max_image_pixels < 1:
    raise UserError(f"--max_image_pixels={opts.max_image_pixels} must be positive.")
  if opts.max_audio_seconds <= 0 or opts.max_audio_seconds < opts.min_audio_seconds:
    raise UserError(f"--max_audio_seconds={opts.max_audio_seconds:g} must be positive and at "
                    f"least --min_audio_seconds={opts.min_audio_seconds:g}.")


def build(manifest, name, data_dir, opts=Options()):
  """Checks every row of `manifest` and writes the good ones as TFDS dataset `name` under
  `data_dir`. Returns (builder, {split: rows kept}, [rejected rows with their 'reason'],
  [notes on kept rows]); each rejected row and note has its 'row' (count of rows before it,
  plus one) and its 'line' in the manifest. builder.info.metadata["splits"] is {split:
  {"rows": kept, "groups": of them}} of the splits written."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _check_options(name, opts)
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  final_dir = os.path.join(data_dir, name)
  if os.path.exists(final_dir):
    raise UserError(f"{final_dir} already exists; choose another --name or delete it to "
                    "rebuild.")
  rows = manifest_lib.read(manifest)
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
  # stays), and the split of each group; then the files, split by split, as TFDS writes them.
  typed = {}
  for number, row in enumerate(rows, 1):
    try:
      typed[number] = manifest_lib.typed(row)
    except ops.BadExample as e:
      reject(number, str(e))
  modalities = [m for m in modality_lib.names() if any(m in row for row in typed.values())]
  if not modalities:
    raise nothing_usable() if rejected else UserError(
        f"{manifest}: no row has an image, audio or text.")
  labels = sorted({row["label"] for row in typed.values() if "label" in row})
  located, first_line = [], {}
  for number, row in typed.items():
    try:
      row = _located(row, root, modalities, bool(labels), opts)
      key = tuple(row.get(m) for m in modalities)
      if key in first_line:
        raise ops.BadExample(f"duplicate of line {first_line[key]} (same files and "
                                    "text)")
      first_line[key] = rows[number - 1].line
    except ops.BadExample as e:
      reject(number, str(e))
    else:
      located.append((number, rows[number - 1].line, row))
  assigned, conflicts = manifest_lib.assign_splits(located, root, opts)
  for number, reason in conflicts:
    reject(number, reason)
  by_split = {s: [(number, row) for number, _, row in located
                  if number in assigned and assigned[number][0] == s] for s in SPLITS}

  label_ids = {label: i for i, label in enumerate(labels)}
  groups = {s: set() for s in SPLITS}  # Of the rows kept.
  # The report saved with the dataset: filled as the splits are written, saved after them.
  metadata = tfds.core.MetadataDict(splits={})

  def generate(split):
    for number, row in by_split[split]:
      try:
        ex, row_notes = example(row, label_ids, opts)
      except ops.BadExample as e:
        reject(number, str(e))
        continue
      kept[split] += 1
      groups[split].add(assigned[number][1])
      metadata["splits"][split] = {"rows": kept[split], "groups": len(groups[split])}
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
        split_datasets=split_datasets, data_dir=temp_dir, metadata=metadata,
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
flags.DEFINE_float("val_fraction", Options.val_fraction,
                   "Groups (of rows) without a split: this fraction is validation.")
flags.DEFINE_float("test_fraction", Options.test_fraction,
                   "Groups (of rows) without a split: this fraction is test.")
flags.DEFINE_integer("seed", Options.seed, "Seeds the split drawn for each group.")


def split_report(splits):
  """Lines saying the rows and groups of each split, from builder.info.metadata["splits"]."""
  return [f"  {split:<10} {n['rows']} rows, {n['groups']} groups" for split, n in splits.items()]


def main(argv):
  del argv
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it writes.
  tfds.disable_progress_bar()  # Ours counts rows.
  opts = Options(**{f.name: getattr(flags.FLAGS, f.name) for f in dataclasses.fields(Options)})
  try:
    # The shell leaves '~' and $VARS after '=' as they are (--data_dir=~/mmjax_data).
    manifest = expand_path(_MANIFEST.value, "--manifest")
    data_dir = expand_path(_DATA_DIR.value, "--data_dir")
    builder, kept, rejected, notes = build(manifest, _NAME.value, data_dir, opts)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Kept {sum(kept.values())} rows in "
        f"{os.path.join(data_dir, _NAME.value)}; rejected "
        f"{len(rejected)}. By split (a group: the rows of one image, else audio file, or "
        "'group' value):")
  print("\n".join(split_report(builder.info.metadata["splits"])))
  for r in rejected[:20]:
    print(f"  line {r['line']}: {r['reason']}")
  if rejected:
    print(f"All rejected rows: {os.path.join(data_dir, _NAME.value)}"
          "_rejected.jsonl")
  if notes:
    print(f"Kept, but note ({len(notes)}):")
    for n in notes[:20]:
      print(f"  line {n['line']}: {n['note']}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["manifest", "name", "data_dir"])
  app.run(main)
