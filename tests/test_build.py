"""Bring your own paired data: a manifest with good and bad rows builds a TFDS dataset of exactly
the good rows, reports each bad row with its reason, and is read by name (trained on by name in
tests/test_modalities.py). A manifest that cannot be read is one message naming the line; a
build killed halfway leaves nothing in the way. Rows of one image share a split."""
import dataclasses
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from mmjax.data import build
from mmjax.data import loader
from mmjax.data import manifest as manifest_lib
from mmjax.errors import UserError

RATE = 22050  # Stored files' rate; the dataset is resampled to 8 kHz.
# Good images are 12x10 (120 pixels), good audio 0.5 s.
OPTS = build.Options(image_size=8, channels=1, sample_rate=8000, max_image_pixels=200,
                     max_audio_seconds=1.0)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tone(freq, seconds=0.5, amplitude=0.5):
  t = np.arange(int(RATE * seconds)) / RATE
  return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _png_claiming(path, width, height):
  """A 1x1 PNG whose header says width x height: only decoding it would find out."""
  Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
  png = bytearray(path.read_bytes())
  png[16:24] = struct.pack(">II", width, height)  # IHDR's data, after its length and type.
  png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))
  path.write_bytes(bytes(png))


def _line(row):
  return json.dumps(row).encode() + b"\n"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  """24 good rows (16 train, 4 validation, 4 test; two classes; row 4's files have unusual
  extensions) and one bad row of each kind."""
  root = tmp_path_factory.mktemp("pairs")
  (root / "files").mkdir()
  rng = np.random.default_rng(0)
  rows = []
  for i in range(24):
    cls = i % 2
    image, audio = (f"files/{i}.png", f"files/{i}.wav") if i != 3 else (
        "files/3.img", "files/3.sound")
    Image.fromarray((rng.random((12, 10)) * 255 * (0.5 + cls / 2)).astype(np.uint8)).save(
        root / image, format="PNG")
    wavfile.write(root / audio, RATE, _tone(300 + 400 * cls + 10 * i))
    rows.append({"image": image, "audio": audio,
                 "text": f"{'a bright' if cls else 'a dark'} picture number {i}",
                 "label": ["dark", "bright"][cls],
                 "split": "train" if i < 16 else "validation" if i < 20 else "test"})
  (root / "files" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  (root / "files" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
  wavfile.write(root / "files" / "silent.wav", RATE, np.zeros(RATE, np.int16))
  wavfile.write(root / "files" / "long.wav", RATE, _tone(440, seconds=2.0))
  wavfile.write(root / "files" / "no_rate.wav", 0, _tone(440))
  Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "files" / "big.png")
  Image.fromarray(np.zeros((2, 10), np.uint8)).save(root / "files" / "strip.png")
  _png_claiming(root / "files" / "bomb.png", 100_000, 100_000)
  outside = root.parent / "outside.png"
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
  good = rows[0]
  bad = [
      (good | {"image": "files/missing.png"}, "file 'files/missing.png' does not exist"),
      (good | {"image": "files/corrupt.png"}, "image 'corrupt.png' does not decode"),
      (good | {"text": "   "}, "'text' is empty"),
      (good | {"audio": "files/corrupt.wav"}, "audio 'corrupt.wav' is not a readable WAV file"),
      (good | {"audio": "files/silent.wav"}, "'audio' is silent"),
      (good | {"image": "../outside.png"}, "path '../outside.png' is outside the manifest's"),
      ({k: v for k, v in good.items() if k != "text"}, "no 'text', which other rows"),
      (good | {"text": "a \ud800 b"}, "'text' holds an unpaired surrogate (U+D800 at "
       "character 3)"),
      (_line(good | {"text": "caf@"}).replace(b"@", b"\xff"),
       "'text' is not UTF-8 (byte 0xff at character 4)"),
      (good | {"text": ["a", "list"]}, "'text' is a JSON list, not a string"),
      (good | {"image": 7}, "'image' is a JSON number, not a string"),
      (good | {"label": ["dark"]}, "'label' is a JSON list, not a string"),
      (good | {"label": "dark\nish"}, "'label' 'dark\\nish' holds a line break"),
      (["files/0.png", "a caption"], "a JSON list, not an object"),
      (good | {"image": "files/big.png"}, "image 'big.png' is 20x20, 400 pixels, over "
       "--max_image_pixels=200"),
      (good | {"image": "files/bomb.png"}, "image 'bomb.png' is 100000x100000, 10000000000 "
       "pixels, over --max_image_pixels=200"),
      (good | {"image": "files/strip.png"}, "image 'strip.png' is 10x2: resized to 40x8 before "
       "the centre crop, over --max_image_pixels=200"),
      (good | {"audio": "files/long.wav"}, "audio 'long.wav' is 2.0 s long, over "
       "--max_audio_seconds=1"),
      (good | {"audio": "files/no_rate.wav"}, "audio 'no_rate.wav' says it is sampled at 0 Hz"),
      (rows[1] | {"image": "./files/1.png", "split": "test"},
       "duplicate of line 2 (same files and text)"),
  ]
  lines = [_line(r) for r in rows[:5]] + [
      r if isinstance(r, bytes) else _line(r) for r, _ in bad] + [_line(r) for r in rows[5:]]
  path = root / "pairs.jsonl"
  path.write_bytes(b"".join(lines))  # Bad rows are rows (and lines) 6, 7, ...
  return str(path), rows, [(6 + i, reason) for i, (_, reason) in enumerate(bad)]


@pytest.fixture(scope="module")
def built(manifest, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  builder, kept, rejected, notes = build.build(manifest[0], "my_pairs", data_dir, OPTS)
  return data_dir, builder, kept, rejected, notes


def test_builds_exactly_the_good_rows_and_reports_the_bad(manifest, built):
  _, rows, bad = manifest
  data_dir, builder, kept, rejected, notes = built
  assert kept == {"train": 16, "validation": 4, "test": 4}
  assert [(r["row"], r["line"]) for r in rejected] == [(row, row) for row, _ in bad]
  for r, (_, reason) in zip(rejected, bad):
    assert reason in r["reason"], (r, reason)
  with open(os.path.join(data_dir, "my_pairs_rejected.jsonl")) as f:
    assert [json.loads(line)["row"] for line in f] == [row for row, _ in bad]
  assert notes == [
      {"row": 4, "line": 4, "note": "image '3.img': unknown extension '.img', read as PNG"},
      {"row": 4, "line": 4, "note": "audio '3.sound': unknown extension '.sound', read as WAV"}]
  # Exactly the dataset and the report (and the vocab, once trained on): no temporary folder.
  assert sorted(e for e in os.listdir(data_dir) if "wordpiece" not in e) == [
      "my_pairs", "my_pairs_rejected.jsonl"]
  assert os.listdir(os.path.join(data_dir, "my_pairs")) == [build.VERSION]
  train = builder.as_data_source("train")
  assert sorted(ex["caption"].decode() for ex in train) == sorted(
      r["text"] for r in rows if r["split"] == "train")
  ex = train[0]
  assert ex["image"].shape == (8, 8, 1) and ex["audio"].dtype == np.int16
  # 0.5 s at 22.05 kHz resampled to 8 kHz.
  assert len(ex["audio"]) == 4000
  assert builder.info.features["label"].names == ["bright", "dark"]


def test_refuses_an_existing_name_and_a_bad_manifest(manifest, built, tmp_path):
  with pytest.raises(UserError, match="already exists"):
    build.build(manifest[0], "my_pairs", built[0], OPTS)
  (tmp_path / "m.jsonl").write_text('{"image": "a.png", "colour": "red"}\n')
  with pytest.raises(UserError, match=r"unknown columns \['colour'\]"):
    build.build(str(tmp_path / "m.jsonl"), "x", str(tmp_path), OPTS)


@pytest.mark.parametrize("file_name, content, message", [
    ("syntax.jsonl", b'{"text": "a"}\n\n{"text": "b",}\n', r"syntax.jsonl, line 3: not JSON "),
    ("key.jsonl", b'{"text": "a"}\n{"te\xffxt": "b"}\n',
     r"key.jsonl, line 2, column 5: byte 0xff is not UTF-8; save the manifest as UTF-8"),
    ("outside_strings.jsonl", b'{"text": "a"}\n{"text": "b"}\xe9\n',
     r"outside_strings.jsonl, line 2, column 14: byte 0xe9 is not UTF-8"),
    ("header.csv", b"image,te\xe9xt\nfoo.png,a\n", r"header.csv, line 1, column 9: byte 0xe9 "),
    ("quote.csv", b'text\na\n"b\nc\n', r"quote.csv, line 3: not valid CSV"),
    ("columns.csv", b"text,text\na,b\n", r"columns.csv, line 1: the header repeats a column"),
    ("utf16.jsonl", '{"text": "a"}\n'.encode("utf-16"), r"utf16.jsonl'? is UTF-16"),
])
def test_a_manifest_that_cannot_be_read_is_one_message_with_its_line(tmp_path, file_name, content,
                                                                       message):
  path = tmp_path / file_name
  path.write_bytes(content)
  with pytest.raises(UserError, match=message) as error:
    build.build(str(path), "x", str(tmp_path / "data"), OPTS)
  assert "\n" not in str(error.value)
  assert not (tmp_path / "data").exists()


def test_the_command_prints_one_line_and_exits_2(tmp_path):
  (tmp_path / "m.jsonl").write_bytes(b'{"text": "a"}\n{"text": "b",}\n')
  # $VARS in path flags are expanded, as the shell does not after '='.
  run = subprocess.run(
      [sys.executable, "-m", "mmjax.data.build", "--manifest=$MMJAX_TEST_DIR/m.jsonl",
       "--name=x", "--data_dir=$MMJAX_TEST_DIR/data"], cwd=REPO, capture_output=True, text=True,
      check=False, env=os.environ | {"MMJAX_TEST_DIR": str(tmp_path)})
  assert run.returncode == 2, run.stderr
  assert run.stderr.splitlines() == [f"error: {tmp_path / 'm.jsonl'}, line 2: not JSON (Expecting "
                                     "property name enclosed in double quotes)."]


def test_an_excel_csv_builds(manifest, tmp_path):
  """UTF-8 with a byte-order mark and CRLF, as Excel saves "CSV UTF-8"; a field in another
  encoding and a row with an extra field are rejected rows."""
  _, rows, _ = manifest
  root = os.path.dirname(manifest[0])
  lines = [b"\xef\xbb\xbfimage,text,label"] + [
      f"{r['image']},\"{r['text']}, quoted\",{r['label']}".encode() for r in rows[:6]] + [
          b"files/6.png,caf\xe9,dark", b"files/7.png,seven,dark,extra"]
  path = pathlib.Path(root) / "excel.csv"  # Beside the files.
  path.write_bytes(b"\r\n".join(lines) + b"\r\n")
  try:
    builder, kept, rejected, notes = build.build(str(path), "excel", str(tmp_path / "data"),
                                                 OPTS)
  finally:
    path.unlink()
  assert sum(kept.values()) == 6 and notes[0]["line"] == 5
  assert [(r["line"], r["reason"]) for r in rejected] == [
      (8, "'text' is not UTF-8 (byte 0xe9 at character 4)"),
      (9, "1 more field(s) than the header")]
  assert builder.info.features["label"].names == ["bright", "dark"]
  captions = sorted(ex["caption"].decode() for s in kept if kept[s]
                    for ex in builder.as_data_source(s))
  assert captions == sorted(f"{r['text']}, quoted" for r in rows[:6])


def test_a_split_or_a_manifest_without_a_good_row(manifest, tmp_path):
  """A split whose rows are all rejected is left out; with no good row at all, the build stops
  with one message and the report."""
  root = pathlib.Path(manifest[0]).parent
  good, bad = manifest[1][0], manifest[1][0] | {"image": "files/corrupt.png"}
  path = root / "one_split.jsonl"  # Beside the files.
  path.write_bytes(_line(good) + _line(bad | {"split": "validation"}))
  try:
    builder, kept, rejected, _ = build.build(str(path), "one_split", str(tmp_path), OPTS)
    assert kept == {"train": 1, "validation": 0, "test": 0} and len(rejected) == 1
    assert list(builder.info.splits) == ["train"]
    path.write_bytes(_line(bad) + _line(["not", "a", "row"]))
    with pytest.raises(UserError, match=r"none of its 2 rows is usable \(line 1: image "
                       r"'corrupt.png' does not decode .*; all reasons in .*none_rejected.jsonl"):
      build.build(str(path), "none", str(tmp_path), OPTS)
  finally:
    path.unlink()
  assert sorted(os.listdir(tmp_path)) == ["none_rejected.jsonl", "one_split",
                                          "one_split_rejected.jsonl"]


def _killed_build(manifest, data_dir, kill_at_image):
  """Runs the builder in a process that SIGKILLs itself on its image number
  `kill_at_image` (while writing)."""
  script = f"""
import os, signal
from mmjax.data import build
from mmjax.modalities import image
calls, real = [], image.read_image
def dying(path, *args):
  calls.append(path)
  if len(calls) == {kill_at_image}:
    os.kill(os.getpid(), signal.SIGKILL)
  return real(path, *args)
image.read_image = dying
build.build({manifest!r}, "killed", {data_dir!r}, build.{OPTS!r})
"""
  return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                        check=False)


def test_a_build_killed_halfway_leaves_nothing_in_the_way(manifest, tmp_path):
  data_dir = str(tmp_path / "data")
  killed = _killed_build(manifest[0], data_dir, kill_at_image=10)
  assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
  [left] = os.listdir(data_dir)  # Its temporary folder, half written.
  assert left.startswith(".killed.tmp-") and os.listdir(os.path.join(data_dir, left))
  other_host = os.path.join(data_dir, ".killed.tmp-elsewhere-1")
  os.mkdir(other_host)  # Maybe a live build on another host sharing data_dir: left alone.

  builder, kept, _, _ = build.build(manifest[0], "killed", data_dir, OPTS)
  assert sorted(os.listdir(data_dir)) == [
      ".killed.tmp-elsewhere-1", "killed", "killed_rejected.jsonl"]
  assert kept == {"train": 16, "validation": 4, "test": 4}
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  found = tfds.builder("killed", data_dir=data_dir)
  assert found.info.splits["train"].num_examples == 16 == len(builder.as_data_source("train"))


def test_a_build_that_fails_halfway_leaves_nothing(manifest, tmp_path, monkeypatch):
  from mmjax.modalities import audio  # pylint: disable=g-import-not-at-top
  real, calls, seen = audio.read_audio, [], []

  def failing(path, opts):
    calls.append(path)
    if len(calls) == 5:
      seen.extend(os.listdir(tmp_path))
      raise RuntimeError("disk on fire")
    return real(path, opts)

  monkeypatch.setattr(audio, "read_audio", failing)
  with pytest.raises(RuntimeError, match="disk on fire"):
    build.build(manifest[0], "failed", str(tmp_path), OPTS)
  [temp_dir] = seen  # While writing: the temporary folder.
  assert temp_dir.startswith(".failed.tmp-")
  assert os.listdir(tmp_path) == []


def test_reads_it_by_name(built, runlocal_config):
  """What a config sees of the built dataset (training on a built dataset by name, end to end:
  tests/test_modalities.py, which builds one with a fourth modality)."""
  config = runlocal_config.copy_and_resolve_references()
  config.data.name, config.data.dir = "my_pairs", built[0]
  config.data.audio_seconds = 0.5
  info = loader.prepare(config.data)
  assert info.modalities == ("image", "text", "audio") and info.shapes["image"] == (8, 8, 1)
  assert info.class_names == ("bright", "dark") and info.split_sizes["train"] == 16
  with pytest.raises(UserError, match="data.sample_rate=16000, but my_pairs's audio is stored at "
                     "8000 Hz"):
    loader.prepare(_with(config.data, sample_rate=16000))


def _with(cfg, **changes):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(changes)
  return cfg


def _captioned(root, images, captions, **columns):
  """Rows of `captions` captions for each of `images` new 12x10 images (in root/img/), with
  `columns` added to every row."""
  (root / "img").mkdir(exist_ok=True)
  rows = []
  for i in images:
    Image.fromarray(np.full((12, 10), 8 * i, np.uint8)).save(root / "img" / f"{i}.png")
    rows += [{"image": f"img/{i}.png", "text": f"image {i} caption {c}", **columns}
             for c in range(captions)]
  return rows


def _stored_images(builder):
  """{split: [image number of each stored example]}, from the stored captions."""
  return {s: [int(ex["caption"].decode().split()[1]) for ex in builder.as_data_source(s)]
          for s in builder.info.splits}


# Fractions that leave no split empty with 30 groups.
SPREAD = dataclasses.replace(OPTS, val_fraction=0.3, test_fraction=0.3)


def test_rows_of_one_image_share_a_split_and_the_report_counts_them(tmp_path):
  """An image with five captions is five rows: all five go to one split, so no test image is
  seen in training; the report states the rows and groups (here: images) of each split."""
  (tmp_path / "pairs.jsonl").write_bytes(b"".join(map(_line, _captioned(tmp_path, range(30), 5))))
  builder, kept, rejected, _ = build.build(str(tmp_path / "pairs.jsonl"), "five", str(tmp_path),
                                           SPREAD)
  assert not rejected and sum(kept.values()) == 150
  images = _stored_images(builder)
  assert set(images) == set(build.SPLITS)
  for split, other in [("train", "validation"), ("train", "test"), ("validation", "test")]:
    assert not set(images[split]) & set(images[other]), (split, other)
  report = {s: {"rows": len(ids), "groups": len(set(ids))} for s, ids in images.items()}
  assert builder.info.metadata["splits"] == report  # Saved with the dataset.
  assert all(n["rows"] == 5 * n["groups"] == kept[s] for s, n in report.items())
  assert build.split_report(report)[0] == (
      f"  train      {report['train']['rows']} rows, {report['train']['groups']} groups")


def test_a_group_column_overrides_the_file(tmp_path):
  """Rows that share a 'group' value share a split, whatever their files; a row whose 'split'
  contradicts its group's is rejected. Without a group, a row's image names its group, else
  its audio."""
  rows = _captioned(tmp_path, range(30), 1)
  for i, row in enumerate(rows):
    row["group"] = i // 10  # Three groups of ten images; an integer, as a JSON id would be.
  rows[0]["split"] = "test"  # So group 0 is in test ...
  rows[5]["split"] = "train"  # ... and this row (line 6) is rejected.
  (tmp_path / "pairs.jsonl").write_bytes(b"".join(map(_line, rows)))
  builder, kept, rejected, _ = build.build(str(tmp_path / "pairs.jsonl"), "grouped",
                                           str(tmp_path), SPREAD)
  assert [(r["line"], r["reason"]) for r in rejected] == [
      (6, "split 'train', but line 1 puts group '0' in 'test'; rows of one group share a split")]
  assert sum(kept.values()) == 29
  images = _stored_images(builder)
  groups = {s: {i // 10 for i in ids} for s, ids in images.items()}
  assert sorted(sum(map(list, groups.values()), [])) == [0, 1, 2]  # Each in one split.
  assert sorted(images["test"])[:9] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
  assert {s: n["groups"] for s, n in builder.info.metadata["splits"].items()} == {
      s: len(g) for s, g in groups.items()}

  root = str(tmp_path)
  row = {"image": os.path.join(root, "a.png"), "audio": os.path.join(root, "b", "c.wav")}
  assert manifest_lib.group_of(row, root) == "image 'a.png'"
  assert manifest_lib.group_of({"audio": row["audio"], "text": "x"}, root) == "audio 'b/c.wav'"
  assert manifest_lib.group_of(row | {"group": "7"}, root) == "group '7'"
  assert manifest_lib.group_of({"text": "x"}, root) is None  # A group of its own.


def test_refuses_a_name_of_the_tfds_catalog(tmp_path):
  """Training opens such a name through TFDS's own builder (`mnist`: TFDS's MNIST, version
  3.0.1), which would never find this build: refused before anything is read or written."""
  (tmp_path / "pairs.jsonl").write_bytes(_line({"text": "a caption"}))
  with pytest.raises(UserError, match=r"^--name='mnist' is a dataset of the TFDS catalog, so "
                     r"training on it would look for TFDS's 'mnist', not this build; choose "
                     r"another name, e.g. 'my_mnist'.$"):
    build.build(str(tmp_path / "pairs.jsonl"), "mnist", str(tmp_path / "data"), OPTS)
  assert not (tmp_path / "data").exists()
