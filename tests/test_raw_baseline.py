"""The raw-input baseline (model name 'raw', mmjax.models.raw): its features against numpy and
the audio tokenizer, the real train step (probe and full fine-tuning settings) lowering the
classification loss, with the MFU count and the memory estimate, and main.py end to end on the
shared test dataset."""
import json
import math
import pathlib
import subprocess
import sys

import einops
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import finetune_digits
from mmjax import models
from mmjax.data import info as data_info
from mmjax.data import text_tokenizer
from mmjax.errors import UserError
from mmjax.models import raw
from mmjax.models import tokenizers
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import memory
from mmjax.train import mfu
from mmjax.train import optimizer
from mmjax.train import trainer

B, CLASSES, IMAGE_SHAPE, TEXT_LEN, VOCAB, SAMPLE_RATE = 16, 4, (8, 8, 3), 10, 40, 8000
REPO = pathlib.Path(__file__).resolve().parents[1]
SPECIAL = {t: i for i, t in enumerate(text_tokenizer.SPECIAL_TOKENS)}  # A learned vocab's ids.


def _config(mode="probe", inputs=("image", "text", "audio")):
  config = finetune_digits.get_config(f"task=fused,mode={mode},runlocal")
  config.model.name = "raw"
  config.model.inputs = inputs
  config.batch_size = B
  return config


def _audio_len(audio_cfg, rows=3):
  """Samples for exactly `rows` patch rows of log-mel frames: the tokenizer then drops no frame
  and normalizes over the same frames as the baseline."""
  return audio_cfg.n_fft + (rows * audio_cfg.patch_time - 1) * audio_cfg.hop


def _info(config):
  return data_info.planned(
      {"image": IMAGE_SHAPE, "text": TEXT_LEN, "audio": _audio_len(config.model.audio)},
      name="test", vocab_size=VOCAB, sample_rate=SAMPLE_RATE, num_classes=CLASSES,
      class_names=tuple("abcd"))


def _batch(info, seed=0):
  """A batch whose label shows in every modality: an image quadrant, a word, a tone; rows of
  every length, a repeated word, [UNK], audio padded at the end."""
  rng = np.random.default_rng(seed)
  label = np.arange(B) % CLASSES
  image = rng.integers(0, 100, (B, *IMAGE_SHAPE))
  for b, y in enumerate(label):
    image[b, 4 * (y // 2):4 * (y // 2) + 4, 4 * (y % 2):4 * (y % 2) + 4] += 150
  lengths = 3 + np.arange(B) % (TEXT_LEN - 2)  # [CLS] + 1..8 pieces + [SEP].
  ids = np.full((B, TEXT_LEN), SPECIAL["[PAD]"])
  for b, n in enumerate(lengths):
    pieces = rng.integers(len(SPECIAL), VOCAB, n - 2)
    pieces[0] = len(SPECIAL) + label[b]  # The label's word.
    pieces[-1] = pieces[0] if n > 4 else pieces[-1]  # Said twice.
    if b == 5:
      pieces[1] = SPECIAL["[UNK]"]
    ids[b, :n] = [SPECIAL["[CLS]"], *pieces, SPECIAL["[SEP]"]]
  samples = info.size("audio")
  t = np.arange(samples) / SAMPLE_RATE
  audio = np.sin(2 * np.pi * (300 + 400 * label[:, None]) * t) + 0.1 * rng.normal(size=(B, t.size))
  audio_mask = t[None] < np.where(np.arange(B) % 3 == 0, 0.6, 1.0)[:, None] * t[-1] + 1e-9
  return {"image": image.astype(np.uint8),
          "text_ids": ids.astype(np.int32), "text_mask": np.arange(TEXT_LEN) < lengths[:, None],
          "audio": np.where(audio_mask, audio, 0.0).astype(np.float32), "audio_mask": audio_mask,
          "label": label.astype(np.int32), "row": np.arange(B, dtype=np.int32)}


@pytest.fixture(scope="module")
def setup():
  config = _config()
  info = _info(config)
  return config, info, _batch(info)


def _standardized(x_bf, w_bf):
  mean = (x_bf * w_bf).sum(-1, keepdims=True) / w_bf.sum(-1, keepdims=True)
  var = (np.square(x_bf - mean) * w_bf).sum(-1, keepdims=True) / w_bf.sum(-1, keepdims=True)
  return (x_bf - mean) / np.sqrt(var + raw.STANDARDIZE_EPS) * w_bf


def test_features_equal_numpy_and_the_audio_tokenizer(setup):
  config, info, batch = setup
  model = models.make(config.model, info, rngs=nnx.Rngs(0))
  hash(nnx.graphdef(model))  # Static attributes (the audio settings) are hashable.
  features = np.asarray(jax.jit(model.features)(batch))
  image_f = math.prod(IMAGE_SHAPE)
  image, text, audio = np.split(features, [image_f, image_f + VOCAB], axis=1)

  pixels = batch["image"].reshape(B, -1).astype(np.float64) / 255.0
  np.testing.assert_allclose(np.asarray(raw.pixels(batch["image"])), pixels, rtol=1e-6)
  np.testing.assert_allclose(image, _standardized(pixels, np.ones_like(pixels)), atol=1e-5)

  specials = [SPECIAL[t] for t in ("[CLS]", "[SEP]", "[PAD]")]
  counts = np.stack([np.bincount(ids[mask & ~np.isin(ids, specials)], minlength=VOCAB)
                     for ids, mask in zip(batch["text_ids"], batch["text_mask"])])
  assert counts.max() >= 2 and counts[5, SPECIAL["[UNK]"]] == 1  # The batch has both.
  np.testing.assert_array_equal(
      np.asarray(raw.bag_of_words(batch["text_ids"], batch["text_mask"], VOCAB)), counts)
  np.testing.assert_allclose(text, np.log1p(counts), rtol=1e-6)

  # The tokenizer's normalized log-mel patches (Tokens.target), back in (frames, mels) order.
  tokenizer = tokenizers.AudioTokenizer(config.model.audio, SAMPLE_RATE, 8, dtype=jnp.float32,
                                        rngs=nnx.Rngs(0))
  target = np.asarray(tokenizer(batch).target)
  cfg = config.model.audio
  spec = einops.rearrange(target, "b (t f) (p q) -> b (t p f q)", p=cfg.patch_time,
                          q=cfg.patch_freq, f=cfg.n_mels // cfg.patch_freq)
  assert audio.shape == spec.shape == (B, 3 * cfg.patch_time * cfg.n_mels)
  np.testing.assert_allclose(audio, spec, atol=1e-4)
  frames = audio.reshape(B, -1, cfg.n_mels)
  padded = ~np.asarray(raw.log_mel(batch["audio"], batch["audio_mask"], cfg, SAMPLE_RATE)[1])
  assert padded[0].any() and not padded[1].any()
  assert not frames[padded].any() and frames[~padded].std() > 0.5


def test_a_missing_modality_is_a_zero_block(setup):
  config, info, batch = setup
  model = models.make(config.model, info, rngs=nnx.Rngs(0))
  has_text = np.arange(B) % 2 == 0
  with_flag = np.asarray(jax.jit(model.features)(batch | {"has_text": has_text}))
  without = np.asarray(jax.jit(model.features)(batch))
  text = slice(math.prod(IMAGE_SHAPE), math.prod(IMAGE_SHAPE) + VOCAB)
  assert not with_flag[~has_text, text].any() and with_flag[has_text, text].any()
  np.testing.assert_array_equal(with_flag[has_text], without[has_text])


def _train(config, info, batch, steps):
  """`steps` real jitted train steps on 8 devices; (losses, first params, last params, step
  FLOPs per device, memory estimate)."""
  mesh = mesh_lib.make_mesh({"data": -1})
  rules = sharding.rules_from_config(config.parallel.rules)
  tx, lr = optimizer.make(config.optimizer, config.total_steps, depth=4)
  graphdef, abstract_state = trainer.abstract_model(config, info, tx)
  shardings = sharding.param_shardings(abstract_state, mesh, rules)
  estimate = memory.estimate(config, info, mesh, abstract_state, shardings)
  state = trainer.initial_state(config, info, tx, shardings)
  first = jax.device_get(state["params"])
  step = trainer.jit_train_step(config, info, mesh, tx, lr, graphdef, shardings)
  batch = mesh_lib.host_to_global(batch, mesh, mesh_lib.batch_axes(config.parallel.rules))
  losses = []
  with sharding.use(mesh, rules):
    flops = mfu.step_flops_per_device(step, state, batch)
    for _ in range(steps):
      state, metrics = step(state, batch)
      losses.append(float(metrics["train/loss"]))
  return losses, first, jax.device_get(state["params"]), flops, estimate


@pytest.mark.parametrize("mode", ["probe", "full"])
def test_train_steps_lower_the_loss(setup, mode):
  """freeze='backbone' (nothing but the head exists: all of it trains) and full fine-tuning's
  layer decay and weight decay both run; from uniform logits (log 4) the loss falls."""
  _, info, batch = setup
  config = _config(mode)
  config.total_steps = 6
  losses, first, last, flops, estimate = _train(config, info, batch, config.total_steps)
  assert set(nnx.to_pure_dict(first)) == {"head"}
  assert abs(losses[0] - math.log(CLASSES)) < 1e-5, losses  # Zero head: uniform logits.
  assert losses[-1] < losses[0] - (0.3 if mode == "probe" else 0.01), losses
  for name in ("kernel", "bias"):
    assert np.any(np.asarray(last["head"][name][...]) != 0), name
  num_features = first["head"]["kernel"][...].shape[0]
  assert num_features == math.prod(IMAGE_SHAPE) + VOCAB + 3 * 4 * 32
  assert flops >= 2 * B * num_features * CLASSES / 8  # At least the head's forward matmul.
  assert estimate["activations"] == 0  # No Transformer pass.
  assert estimate["params"] >= (num_features + 1) * CLASSES * 4 / 8


def test_bad_configs_are_user_errors(setup):
  config, info, _ = setup
  config = config.copy_and_resolve_references()
  config.model.inputs = ("image", "depth")
  with pytest.raises(UserError, match="config.model.inputs"):
    models.make(config.model, info, rngs=nnx.Rngs(0))
  config.model.inputs = ("audio",)
  config.model.audio.n_fft = info.size("audio") + 1
  with pytest.raises(UserError, match="n_fft"):
    models.make(config.model, info, rngs=nnx.Rngs(0))


@pytest.mark.slow  # End-to-end: main.py in a subprocess (about 10 s).
def test_main_runs_the_probe_protocol_end_to_end(data_dir, tmp_path):
  """The fine-tuning config with only the model name changed: trains, evaluates, restores
  nothing (init_from empty) and beats chance (0.1) on the test split after 4 steps."""
  workdir = tmp_path / "raw"
  subprocess.run(
      [sys.executable, "main.py", "--config=configs/finetune_digits.py:task=fused,mode=probe,"
       "runlocal", "--config.model.name=raw", f"--config.data.dir={data_dir}",
       f"--workdir={workdir}"], cwd=REPO, check=True, timeout=600)
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  assert rows[-1]["eval/classification/accuracy"] > 0.3, rows[-1]
  assert not (workdir / "init_from.json").exists()
