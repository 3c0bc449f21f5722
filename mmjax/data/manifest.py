"""Reading a manifest of mmjax.data.build: JSONL or CSV rows, their columns (one per modality
of the registry, label, split, group) and values typed and checked as text, line by line, and
the split of each row's group. A problem with one row is an ops.BadExample for that row; one
with the file's structure a UserError naming the line."""
import csv
import hashlib
import json
import os
import re
from typing import Any, NamedTuple

from mmjax import modality as modality_lib
from mmjax.data import ops
from mmjax.errors import UserError

# Bytes that are not UTF-8 read as these (errors="surrogateescape"); a JSON escape such as
# "\ud800" gives the rest of the surrogate range.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
SPLITS = ("train", "validation", "test")


class ManifestRow(NamedTuple):
  line: int  # Where the row starts in the manifest (1-based).
  value: Any  # A dict for a well-formed row; JSONL may hold any JSON value.
  bad_bytes: bool  # The row's text held bytes that are not UTF-8 (now U+DC80..U+DCFF).


def _not_utf8(path, line, text):
  """UserError for the first byte of `text` (read with surrogateescape) that is not UTF-8."""
  bad = _BAD_BYTE.search(text)
  return UserError(f"{path}, line {line}, column {bad.start() + 1}: byte "
                   f"{ord(bad.group()) - 0xdc00:#04x} is not UTF-8; save the manifest as UTF-8.")


def columns():
  """The manifest's columns: one per modality (mmjax.modalities, registered ones too), label,
  split and group."""
  return set(modality_lib.names()) | {"label", "split", "group"}


def _unknown_columns(path, line, names):
  unknown = set(names) - columns()
  if unknown:
    raise UserError(f"{path}, line {line}: unknown columns {sorted(unknown)}; use "
                    f"{sorted(columns())}.")


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


def read(path):
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


def typed(row):
  """{column: str} of a ManifestRow's non-empty values; BadExample for a row that is not an
  object, has more CSV fields than the header, or holds a value that is not a string (an
  integer label or group becomes one) or not valid text."""
  if not isinstance(row.value, dict):
    raise ops.BadExample(f"a JSON {_json_type(row.value)}, not an object")
  if None in row.value:
    raise ops.BadExample(f"{len(row.value[None])} more field(s) than the header")
  out = {}
  for column, value in row.value.items():
    if column in ("label", "group") and isinstance(value, int) and not isinstance(value, bool):
      value = str(value)
    if value is None or value == "":
      continue  # As if absent.
    if not isinstance(value, str):
      raise ops.BadExample(f"{column!r} is a JSON {_json_type(value)}, not a string")
    surrogate = _SURROGATE.search(value)
    if surrogate and row.bad_bytes and _BAD_BYTE.match(surrogate.group()):
      raise ops.BadExample(f"{column!r} is not UTF-8 (byte "
                                  f"{ord(surrogate.group()) - 0xdc00:#04x} at character "
                                  f"{surrogate.start() + 1})")
    if surrogate:
      raise ops.BadExample(f"{column!r} holds an unpaired surrogate "
                                  f"(U+{ord(surrogate.group()):04X} at character "
                                  f"{surrogate.start() + 1}), which is not text")
    if column == "label":
      # TFDS stores class names one per line, stripped: keep them as they will read back.
      value = value.strip()
      if "\n" in value or "\r" in value:
        raise ops.BadExample(f"'label' {value!r} holds a line break")
      if not value:
        continue
    if column == "split" and value not in SPLITS:
      raise ops.BadExample(f"split {value!r} is not one of {list(SPLITS)}")
    out[column] = value
  return out


def group_of(row, root):
  """What the row's group is named by, e.g. "image 'img/1.png'": its 'group' column, else the
  first file it names in the modalities' order (the image, else the audio), relative to the
  manifest's folder `root` (`row` holds real paths: './a.png' and 'a.png' are one file);
  None for a row without a file (text alone)."""
  if "group" in row:
    return f"group {row['group']!r}"
  for m in modality_lib.ordered(set(row) & set(modality_lib.names())):
    if modality_lib.get(m).reads_file:
      return f"{m} {os.path.relpath(row[m], root)!r}"
  return None


def _drawn(group, opts):
  """The split drawn for `group` from (seed, group): the same wherever its rows are, and the
  same in the next build of the manifest with rows added or removed."""
  digest = hashlib.sha256(f"{opts.seed}\0{group}".encode("utf-8", "surrogateescape")).digest()
  u = int.from_bytes(digest[:8], "little") / 2**64
  return ("test" if u < opts.test_fraction else
          "validation" if u < opts.test_fraction + opts.val_fraction else "train")


def assign_splits(rows, root, opts):
  """Splits by group, so that no image (or audio file, or 'group' value) is in two splits,
  which would leak test examples into training (a caption of a test image seen in training).

  rows: [(row number, line, row with real paths)], in the manifest's order. A group's split
  is the 'split' column of its first row that has one, else drawn from (seed, group). Returns
  ({row number: (split, group)}, [(row number, reason)] for rows whose 'split' column
  contradicts an earlier row of their group)."""
  groups = {number: group_of(row, root) or f"row {number}" for number, _, row in rows}
  chosen = {}  # Group -> (split, line of the row that chose it).
  for number, line, row in rows:
    if "split" in row:
      chosen.setdefault(groups[number], (row["split"], line))
  assigned, conflicts = {}, []
  for number, _, row in rows:
    group = groups[number]
    split, line = chosen.get(group) or (_drawn(group, opts), None)
    if row.get("split", split) != split:
      conflicts.append((number, f"split {row['split']!r}, but line {line} puts {group} in "
                                f"{split!r}; rows of one group share a split"))
    else:
      assigned[number] = (split, group)
  return assigned, conflicts
