"""Bad examples in a dataset: a clear error naming the example (data.on_bad_example='error'),
or skipped and counted ('skip'), in the training stream and in evaluation splits.

The stored records come from the small built-in dataset, with some of them corrupted the way
real collections are: image bytes that do not decode, empty or non-UTF-8 captions, silent or
too-short audio, audio from another sample rate.
"""
import re

import grain
import numpy as np
import pytest

from mmjax.data import loader
from mmjax.data import sources
from mmjax.errors import UserError
from tests.test_data import small_config

# name -> (change to a stored record, what the message says about it)
CORRUPTIONS = {
    "corrupt image": ({"image": b"\x89PNG\r\n\x1a\n truncated"},
                      "'image' bytes do not decode as an image"),
    "empty text": ({"caption": b"  "}, "'caption' is empty"),
    "non-UTF-8 text": ({"caption": b"the digit \xff"},
                       "'caption' is not UTF-8 (byte 0xff at position 10)"),
    "silent audio": ({"audio": np.zeros(4000, np.int16)},
                     "'audio' is silent (digital silence, below -60 dBFS)"),
    "short audio": ({"audio": np.full(100, 3000, np.int16)},
                    "'audio' has 100 samples (0.013 s), fewer than 800"),
    "wrong sample rate": ({"sample_rate": 16000},
                          "'audio' is sampled at 16000 Hz, but data.sample_rate is 8000 Hz"),
}


@pytest.fixture(scope="module")
def small(data_dir):
  cfg = small_config(data_dir)
  info = loader.prepare(cfg)
  records = {split: [dict(r) for r in sources.raw_source(cfg, split)]
             for split in ("train", "test")}
  return cfg, info, records


def corrupt(monkeypatch, records, bad):
  """Makes the loader read `records` with the records {split: {index: change}} changed."""
  changed = {split: [r | bad.get(split, {}).get(i, {}) for i, r in enumerate(rows)]
             for split, rows in records.items()}
  monkeypatch.setattr(sources, "raw_source", lambda cfg, split: changed[split])


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_error_names_the_example_and_the_problem(small, monkeypatch, kind):
  cfg, info, records = small
  change, message = CORRUPTIONS[kind]
  corrupt(monkeypatch, records, {"train": {37: change}, "test": {5: change}})
  whole_split = len(records["train"])  # One batch holds every example.
  it = iter(loader.train_loader(cfg, info, global_batch_size=whole_split, seed=0,
                                process_index=0, process_count=1))
  message = re.escape(message)
  with pytest.raises(UserError, match=f"mmjax_digits train example 37: {message}.*"
                                      "on_bad_example=skip"):
    next(it)
  with pytest.raises(UserError, match=f"mmjax_digits test example 5: {message}"):
    list(loader.split_batches(cfg, info, "test", 16))


def test_skip_replaces_bad_examples_and_counts_them(small, monkeypatch):
  cfg, info, records = small
  n = len(records["train"])
  bad = dict(zip((3, 40, 77, 101, 120, 139), (c for c, _ in CORRUPTIONS.values())))
  corrupt(monkeypatch, records, {"train": bad, "test": {0: bad[3], 9: bad[40]}})
  cfg = small_config(cfg.dir, on_bad_example="skip")
  batches = list(loader.split_batches(cfg, info, "test", 16))
  valid = np.concatenate([b["valid"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])[valid]
  np.testing.assert_array_equal(index, [i for i in range(len(records["test"])) if i not in (0, 9)])

  epochs, batch_size = 2, 14
  batches = loader.train_loader(cfg, info, global_batch_size=batch_size, seed=0,
                                process_index=0, process_count=1)
  batches = [b for b, _ in zip(batches, range(epochs * n // batch_size))]
  index = np.concatenate([b["index"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  # The stream the loader shuffles: a bad example's position gets another, good, example.
  order = np.asarray(list(grain.MapDataset.range(n).shuffle(seed=0).repeat(None)[:len(index)]))
  at_bad = np.isin(order, list(bad))
  assert at_bad.sum() == epochs * len(bad)
  assert not np.isin(index, list(bad)).any()
  np.testing.assert_array_equal(index[~at_bad], order[~at_bad])
  assert (skipped[at_bad] >= 1).all() and (skipped[~at_bad] == 0).all()


def test_bad_policy_and_min_audio_are_config_errors(small):
  cfg, _, _ = small
  with pytest.raises(UserError, match=r"data.on_bad_example='ignore': must be one of"):
    loader.prepare(small_config(cfg.dir, on_bad_example="ignore"))
  with pytest.raises(UserError, match=r"data.min_audio_seconds=2.0: must be in \[0, "):
    loader.prepare(small_config(cfg.dir, min_audio_seconds=2.0))
