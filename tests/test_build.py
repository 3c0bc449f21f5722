"""Bring your own paired data: a manifest with good and bad rows builds a TFDS dataset of exactly
the good rows, reports each bad row with its reason, and trains by name."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from mmjax.data import build
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.train import trainer

RATE = 22050  # Stored files' rate; the dataset is resampled to 8 kHz.
OPTS = build.Options(image_size=8, channels=1, sample_rate=8000)


def _tone(freq, seconds=0.5, amplitude=0.5):
  t = np.arange(int(RATE * seconds)) / RATE
  return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  """24 good rows (16 train, 4 validation, 4 test; two classes) and one bad row of each kind."""
  root = tmp_path_factory.mktemp("pairs")
  (root / "files").mkdir()
  rng = np.random.default_rng(0)
  rows = []
  for i in range(24):
    cls = i % 2
    Image.fromarray((rng.random((12, 10)) * 255 * (0.5 + cls / 2)).astype(np.uint8)).save(
        root / "files" / f"{i}.png")
    wavfile.write(root / "files" / f"{i}.wav", RATE, _tone(300 + 400 * cls + 10 * i))
    rows.append({"image": f"files/{i}.png", "audio": f"files/{i}.wav",
                 "text": f"{'a bright' if cls else 'a dark'} picture number {i}",
                 "label": ["dark", "bright"][cls],
                 "split": "train" if i < 16 else "validation" if i < 20 else "test"})
  (root / "files" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  (root / "files" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
  wavfile.write(root / "files" / "silent.wav", RATE, np.zeros(RATE, np.int16))
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
  ]
  lines = rows[:5] + [row for row, _ in bad] + rows[5:]  # Bad rows are rows 6..12.
  path = root / "pairs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in lines))
  return str(path), rows, [(6 + i, reason) for i, (_, reason) in enumerate(bad)]


@pytest.fixture(scope="module")
def built(manifest, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  builder, kept, rejected = build.build(manifest[0], "my_pairs", data_dir, OPTS)
  return data_dir, builder, kept, rejected


def test_builds_exactly_the_good_rows_and_reports_the_bad(manifest, built):
  _, rows, bad = manifest
  data_dir, builder, kept, rejected = built
  assert kept == {"train": 16, "validation": 4, "test": 4}
  assert [r["row"] for r in rejected] == [row for row, _ in bad]
  for r, (_, reason) in zip(rejected, bad):
    assert reason in r["reason"], (r, reason)
  with open(os.path.join(data_dir, "my_pairs_rejected.jsonl")) as f:
    assert [json.loads(line)["row"] for line in f] == [row for row, _ in bad]
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


def test_trains_on_it_by_name(built, runlocal_config, tmp_path):
  data_dir = built[0]
  config = runlocal_config.copy_and_resolve_references()
  config.data.name, config.data.dir = "my_pairs", data_dir
  config.data.audio_seconds = 0.5
  config.total_steps, config.batch_size, config.log_every = 4, 8, 1
  config.model.scan_layers = True
  info = loader.prepare(config.data)
  assert info.modalities == ("image", "text", "audio") and info.image_shape == (8, 8, 1)
  assert info.class_names == ("bright", "dark") and info.split_sizes["train"] == 16
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert "eval/retrieval/image_to_text/r@1" in metrics
  with pytest.raises(UserError, match="data.sample_rate=16000, but my_pairs's audio is stored at "
                     "8000 Hz"):
    loader.prepare(_with(config.data, sample_rate=16000))


def _with(cfg, **changes):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(changes)
  return cfg
