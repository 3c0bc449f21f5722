"""The built-in dataset, the grain loader and the preprocessing ops, on the small (runlocal)
build of mmjax_digits: 200 images, one train example per image."""
import sys
import threading
import time

import cloudpickle
import ml_collections

import numpy as np
import pytest

from mmjax.data import digits
from mmjax.data import loader
from mmjax.data import ops_audio
from mmjax.data import pipeline
from mmjax.errors import UserError

KEYS = {"image", "text_ids", "text_mask", "audio", "audio_mask", "label", "image_id", "index"}


def small_config(data_dir, **overrides):
  cfg = loader.default_config()
  cfg.dir = data_dir
  cfg.max_images = 200
  cfg.examples_per_image = 1
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="module")
def small(data_dir):
  cfg = small_config(data_dir)
  return cfg, loader.prepare(cfg)


def take(data_cfg, info, n, **kwargs):
  it = iter(loader.train_loader(data_cfg, info, **kwargs))
  return [next(it) for _ in range(n)]


def stored(data_cfg, split, key):
  return [ex[key] for ex in loader.data_source(data_cfg, split)]


def check_batch(batch, info, batch_size):
  b, l, t = batch_size, info.size("text"), info.size("audio")
  expected = {"image": (np.uint8, (b, *info.shapes["image"])), "text_ids": (np.int32, (b, l)),
              "text_mask": (np.bool_, (b, l)), "audio": (np.float32, (b, t)),
              "audio_mask": (np.bool_, (b, t)), "label": (np.int32, (b,)),
              "image_id": (np.int32, (b,)), "index": (np.int32, (b,))}
  for key, (dtype, shape) in expected.items():
    assert batch[key].dtype == dtype and batch[key].shape == shape, (key, batch[key].dtype,
                                                                     batch[key].shape)
  ids, mask = batch["text_ids"], batch["text_mask"]
  lengths = mask.sum(1)
  # Masks are prefixes: [CLS] pieces [SEP], then [PAD] (id 0) where the mask is off.
  np.testing.assert_array_equal(mask, np.arange(l) < lengths[:, None])
  assert (lengths >= 3).all()
  cls_id, sep_id = ids[0, 0], ids[0, lengths[0] - 1]
  assert (ids[:, 0] == cls_id).all() and (ids[np.arange(b), lengths - 1] == sep_id).all()
  assert (ids[~mask] == 0).all() and (ids[mask] < info.vocab_size).all()
  # Audio is silent outside its mask, speech inside, and within [-1, 1].
  assert (batch["audio"][~batch["audio_mask"]] == 0).all()
  assert batch["audio_mask"].any(1).all() and np.abs(batch["audio"]).max() <= 1.0
  assert ((batch["label"] >= 0) & (batch["label"] < info.num_classes)).all()


def test_prepare_info(small):
  cfg, info = small
  assert info.modalities == ("image", "text", "audio")
  assert info.shapes["image"] == (8, 8, 1) and info.size("audio") == 8000
  assert info.class_names[7] == "seven" and info.num_classes == 10
  assert info.split_sizes == {"train": 140, "validation": 20, "test": 40}
  assert 20 < info.vocab_size <= cfg.vocab_size
  assert loader.prepare(cfg) == info  # Built once: the second call only reads.


def test_train_batches(small):
  cfg, info = small
  for batch in take(cfg, info, 2, global_batch_size=8, seed=0, process_index=0,
                    process_count=1):
    assert set(batch) == KEYS | {"skipped", "source"}
    check_batch(batch, info, 8)
    assert (batch["skipped"] == 0).all() and (batch["source"] == 0).all()
    # 'index' names the stored example: its image_id is the stored one.
    stored_ids = np.asarray(stored(cfg, "train", "image_id"))
    np.testing.assert_array_equal(batch["image_id"], stored_ids[batch["index"]])


def test_split_batches_cover_each_example_once(small):
  cfg, info = small
  for split in ("validation", "test"):
    batches = list(loader.split_batches(cfg, info, split, 16))
    n = info.split_sizes[split]
    assert len(batches) == -(-n // 16)
    for batch in batches:
      assert set(batch) == KEYS | {"valid"}
      check_batch(batch, info, 16)
      # No augmentation: every waveform starts at sample 0.
      assert batch["audio_mask"][:, 0].all()
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == n and valid[:n].all()
    # One example per image in these splits, in stored order.
    ids = np.concatenate([b["image_id"] for b in batches])[valid]
    np.testing.assert_array_equal(ids, stored(cfg, split, "image_id"))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches])[valid],
                                  np.arange(n))


def test_splits_separate_images_and_voices(small):
  cfg, _ = small
  ids = {s: set(stored(cfg, s, "image_id")) for s in ("train", "validation", "test")}
  voices = {s: {v.decode() for v in stored(cfg, s, "voice")}
            for s in ("train", "validation", "test")}
  assert not ids["train"] & ids["test"]
  assert not ids["train"] & ids["validation"]
  assert not ids["validation"] & ids["test"]
  assert not voices["train"] & voices["test"]
  train_pool, test_pool = map(set, digits.voice_pools())
  assert voices["validation"] <= train_pool and voices["train"] <= train_pool
  # Test voices differ from every training voice in variant, speed and pitch.
  for voice in voices["test"]:
    name, speed, pitch = digits.parse_voice(voice)
    assert name.split("+")[1] in digits.TEST_VARIANTS
    assert speed not in digits.TRAIN_SPEEDS and pitch not in digits.TRAIN_PITCHES


def test_seed_determines_batches(small):
  cfg, info = small
  kwargs = dict(global_batch_size=8, process_index=0, process_count=1)
  a, b, c = (take(cfg, info, 3, seed=s, **kwargs) for s in (0, 0, 1))
  for x, y in zip(a, b):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key])
  assert any((x["image_id"] != z["image_id"]).any() for x, z in zip(a, c))


def test_augment_only_when_asked(data_dir, small):
  _, info = small
  kwargs = dict(global_batch_size=16, seed=0, process_index=0, process_count=1)
  plain = take(small_config(data_dir, augment=False), info, 1, **kwargs)[0]
  augmented = take(small_config(data_dir, augment=True), info, 1, **kwargs)[0]
  np.testing.assert_array_equal(plain["image_id"], augmented["image_id"])
  assert plain["audio_mask"][:, 0].all()
  assert not augmented["audio_mask"][:, 0].all()  # Random start offsets.
  assert not np.allclose(plain["audio"], augmented["audio"])


def test_iterator_state_resumes(small):
  cfg, info = small
  make = lambda: iter(loader.train_loader(cfg, info, global_batch_size=8, seed=3,
                                          process_index=0, process_count=1))
  it = make()
  next(it), next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = make()
  resumed.set_state(state)
  for x, y in zip(expected, [next(resumed) for _ in range(2)]):
    for key in KEYS:
      np.testing.assert_array_equal(x[key], y[key])


def test_process_shards_are_disjoint_and_cover_an_epoch(small):
  cfg, info = small
  n = info.split_sizes["train"]  # 140: 70 per process, 10 batches of 7.
  shards = []
  for index in range(2):
    batches = take(cfg, info, n // 14, global_batch_size=14, seed=0, process_index=index,
                   process_count=2)
    ids = np.concatenate([b["image_id"] for b in batches])
    assert len(set(ids)) == len(ids) == n // 2
    shards.append(set(ids))
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(stored(cfg, "train", "image_id"))


def test_prepare_without_espeak_says_how_to_install(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(UserError, match="apt-get install espeak-ng"):
    loader.prepare(small_config(str(tmp_path / "data")))


def test_prepare_built_dataset_needs_no_espeak(data_dir, small, tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  assert loader.prepare(small_config(data_dir)) == small[1]


def test_runs_started_together_build_once(small, tmp_path, monkeypatch):
  """Two first runs on a fresh data.dir (a SLURM array): one builds, the other waits for it and
  reads its build. Each used to build its own copy, and the second to finish failed to move it
  into place (FileExistsError: Cannot rename ...incomplete...)."""
  real, building, runs = digits.synthesize_all, [], []

  def waiting_at_a_lock(thread):
    frame = sys._current_frames().get(thread.ident)  # pylint: disable=protected-access
    while frame and "filelock" not in frame.f_code.co_filename:
      frame = frame.f_back
    return frame is not None

  def synthesize_all(*args):
    # Holds the first build until the other run builds too (the race), or is seen on its
    # stack waiting at a lock (at most 2 s): then goes on.
    building.append(threading.current_thread())
    deadline = time.monotonic() + 2
    while len(building) < 2 and time.monotonic() < deadline and not any(
        waiting_at_a_lock(t) for t in runs if t not in building):
      time.sleep(0.01)
    return real(*args)

  monkeypatch.setattr(digits, "synthesize_all", synthesize_all)
  # The vocab given: learning it is not what is tested (and threads of one process would
  # share its temporary file, named by process).
  cfg = small_config(str(tmp_path), max_images=20, vocab_file=small[1].vocab_file)
  results = {}

  def run(name):
    try:
      results[name] = loader.prepare(cfg.copy_and_resolve_references()).split_sizes
    except Exception as e:  # pylint: disable=broad-exception-caught
      results[name] = e

  runs += [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
  for thread in runs:
    thread.start()
  for thread in runs:
    thread.join()
  sizes = {"train": 14, "validation": 2, "test": 4}
  assert results == {"first": sizes, "second": sizes}
  assert len(building) == 1  # Built once.


@pytest.mark.parametrize("key,value", [
    ("name", "mmjax_nope"), ("name", "mnist"), ("dir", ""), ("sample_rate", 0),
    ("audio_seconds", 0.0), ("text_len", 2), ("vocab_file", "/no/such/vocab.txt"),
    ("max_images", 5), ("examples_per_image", 0),
])
def test_bad_config_value_names_the_key(data_dir, key, value):
  with pytest.raises(UserError, match=f"data.{key}"):
    loader.prepare(small_config(data_dir, **{key: value}))


def test_unusable_dir_names_the_key(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(UserError, match="data.dir"):
    loader.prepare(small_config(str(tmp_path / "file" / "data")))


def test_random_crop_or_pad():
  op = ops_audio.get_random_crop_or_pad(10)
  short = {"audio": np.arange(1, 5, dtype=np.float32)}
  for seed in range(5):
    out = op(short, np.random.default_rng(seed))
    start = int(np.argmax(out["audio_mask"]))
    np.testing.assert_array_equal(out["audio"][start:start + 4], short["audio"])
    assert out["audio_mask"].sum() == 4 and out["audio"].sum() == short["audio"].sum()
  long = {"audio": np.arange(1, 21, dtype=np.float32)}
  out = op(long, np.random.default_rng(0))
  assert out["audio_mask"].all() and np.all(np.diff(out["audio"]) == 1)
  again = op(long, np.random.default_rng(0))
  np.testing.assert_array_equal(out["audio"], again["audio"])


def test_crop_or_pad_and_float():
  out = ops_audio.get_crop_or_pad(4)(
      ops_audio.get_to_float()({"audio": np.array([-32768, 16384, 1], np.int16)}))
  np.testing.assert_allclose(out["audio"], [-1.0, 0.5, 1 / 32768, 0.0])
  np.testing.assert_array_equal(out["audio_mask"], [True, True, True, False])


AUDIO_PP = "check_audio|to_float|crop_or_pad(4000)|cast('int32', 'label')|cast('int32', 'image_id')"


def test_preprocessing_from_op_strings(data_dir):
  pp = f"decode(channels=1)|resize(16, method='nearest')|check_text|tokenize(12)|{AUDIO_PP}"
  cfg = small_config(data_dir, pp_train=pp.replace("crop_or_pad", "random_crop_or_pad"),
                     pp_eval=pp)
  info = loader.prepare(cfg)
  assert info.shapes["image"] == (16, 16, 1) and info.size("text") == 12
  assert info.size("audio") == 4000
  batch = take(cfg, info, 1, global_batch_size=8, seed=0, process_index=0, process_count=1)[0]
  plain = take(small_config(data_dir), loader.prepare(small_config(data_dir)), 1,
               global_batch_size=8, seed=0, process_index=0, process_count=1)[0]
  np.testing.assert_array_equal(plain["image_id"], batch["image_id"])
  # Nearest-neighbour 8x8 -> 16x16 repeats every pixel twice along each axis.
  np.testing.assert_array_equal(batch["image"], plain["image"].repeat(2, 1).repeat(2, 2))
  assert batch["text_ids"].shape == (8, 12) and batch["audio"].shape == (8, 4000)


@pytest.mark.parametrize("changes, message", [
    (dict(pp_train="decode|resise(16)"), r"data.pp_train: op 2 'resise\(16\)': 'resise': no op "
                                         r"of that name. Did you mean 'resize'\?"),
    (dict(pp_eval="decode(channels=1)|resize(-3)"), r"data.pp_eval: op 2 'resize\(-3\)': size"),
    (dict(pp_eval=f"decode(channels=1)|{AUDIO_PP}"),
     r"data.pp_eval does not produce \['text_ids', 'text_mask'\]"),
    (dict(pp_train=f"decode(channels=1)|resize(16)|check_text|tokenize(16)|{AUDIO_PP}",
          pp_eval=f"decode(channels=1)|check_text|tokenize(16)|{AUDIO_PP}"),
     r"data.pp_train makes .*\(16, 16, 1\).*, but data.pp_eval makes .*\(8, 8, 1\)"),
])
def test_bad_op_strings_are_config_errors(data_dir, changes, message):
  with pytest.raises(UserError, match=message):
    loader.prepare(small_config(data_dir, **changes))


def test_reader_reopens_its_source_in_worker_processes(small):
  """grain pickles the reader into worker processes (data.num_workers): it must reopen the
  TFDS data source there, not unpickle it (a registered TFDS config cannot be rebuilt)."""
  cfg, info = small
  reader = pipeline.Reader(cfg, info, "validation", train=False)
  assert "source" not in reader.__getstate__()
  clone = cloudpickle.loads(cloudpickle.dumps(reader))  # As grain does.
  for key, value in reader(3).items():
    np.testing.assert_array_equal(clone(3)[key], value)


def _mixture(data_dir, weights):
  """The train split and the validation split of the small build, as two mixture entries."""
  cfg = small_config(data_dir)
  cfg.mixture = ml_collections.ConfigDict({
      "a": dict(weight=weights[0]), "b": dict(weight=weights[1], train_split="validation")})
  return cfg


def test_mixture_proportions_follow_the_weights(data_dir):
  cfg = _mixture(data_dir, (0.8, 0.2))
  info = loader.prepare(cfg)
  kwargs = dict(global_batch_size=16, process_index=0, process_count=1)
  batches = take(cfg, info, 50, seed=0, **kwargs)
  source = np.concatenate([b["source"] for b in batches])
  assert abs((source == 1).mean() - 0.2) < 0.05  # 800 examples: sampling error ~0.014.
  # Entry b's examples are the validation split's (its image_ids), a's the train split's.
  val_ids = set(stored(cfg, "validation", "image_id"))
  ids = np.concatenate([b["image_id"] for b in batches])
  assert all((i in val_ids) == (s == 1) for i, s in zip(ids, source))
  # Deterministic for a seed; another seed, another order.
  again, other = (take(cfg, info, 3, seed=s, **kwargs) for s in (0, 1))
  for x, y in zip(batches, again):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert any((x["image_id"] != z["image_id"]).any() for x, z in zip(batches, other))


def test_mixture_errors_name_the_entry(data_dir):
  with pytest.raises(UserError, match=r"data.mixture.b.weight=0: give a positive weight"):
    loader.prepare(_mixture(data_dir, (0.8, 0)))
  cfg = _mixture(data_dir, (1, 1))
  cfg.mixture.b.colour = "red"
  with pytest.raises(UserError, match=r"data.mixture.b.colour: not a data field"):
    loader.prepare(cfg)
  cfg = _mixture(data_dir, (1, 1))
  cfg.mixture.b.text_len = 8  # Other batch shapes than the evaluation data's.
  with pytest.raises(UserError, match=r"data.mixture.b \(mmjax_digits\) makes 'text_ids' of "
                     r"shape \[8\], but data \(mmjax_digits\) makes \[16\]"):
    loader.prepare(cfg)
