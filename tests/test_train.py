"""The training loop end to end (tiny model, built-in data) and its pieces."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(runlocal_config, tmp_path_factory):
  """A 24-step run, then the same workdir resumed to 30 steps."""
  config = runlocal_config.copy_and_resolve_references()
  config.total_steps, config.log_every = 24, 1
  config.checkpoint_every = config.eval_every = 12
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(config, workdir)
  first_rows = metrics_lib.read_jsonl(workdir)
  config.total_steps = 30
  final = trainer.train_and_evaluate(config, workdir)
  return workdir, first_rows, metrics_lib.read_jsonl(workdir), final


def _losses(rows):
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def test_loss_decreases(trained):
  _, rows, _, _ = trained
  losses = [loss for _, loss in _losses(rows)]
  assert len(losses) == 24
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_writes_checkpoints_metrics_and_pictures(trained):
  workdir, _, _, final = trained
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["24", "30"]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == 30
  pictures = os.listdir(os.path.join(workdir, "images"))
  assert "reconstruction_000012.png" in pictures and "reconstruction_000030.png" in pictures
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  directions = {k.split("/")[2] for k in final if k.startswith("eval/retrieval/")}
  assert directions == {f"{a}_to_{b}" for a in ("image", "text", "audio")
                        for b in ("image", "text", "audio") if a != b}
  assert all(0 <= v <= 1 for k, v in final.items() if "/r@" in k)


def test_resume_continues_from_checkpoint(trained):
  _, first_rows, all_rows, _ = trained
  steps = [s for s, _ in _losses(all_rows)]
  # The resumed run starts at step 25: nothing before it is trained (or logged) twice.
  assert steps == list(range(1, 31))
  resumed_first = dict(_losses(all_rows))[25]
  initial = np.mean([loss for _, loss in _losses(first_rows)][:3])
  assert resumed_first < initial  # Trained weights were restored, not re-initialized.


def test_zero_shot_classification_runs_on_the_pretrained_model(trained):
  _, _, _, final = trained
  for m in ("image", "audio"):
    assert 0.0 <= final[f"eval/zero_shot/{m}/accuracy"] <= 1.0


def test_finetune_on_1_device_from_pretraining_on_8(trained, runlocal_config, tmp_path):
  """The trained run (8 fake devices) fine-tuned in a process with one device: the encoder and
  image tokenizer load, the head is new, the decoder is unused; it trains and evaluates."""
  pretrain_dir = trained[0]
  with open(os.path.join(pretrain_dir, "config.json")) as f:
    assert json.load(f)["mesh"]["data"] == -1  # All 8 devices of this process.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # One CPU device.
  workdir = tmp_path / "finetune"
  subprocess.run(
      [sys.executable, "main.py", "--config=configs/finetune_digits.py:task=image,runlocal",
       f"--workdir={workdir}", f"--config.init_from={pretrain_dir}",
       f"--config.data.dir={runlocal_config.data.dir}"],
      cwd=REPO, env=env, check=True, timeout=600)
  with open(workdir / "init_from.json", encoding="utf-8") as f:
    report = json.load(f)
  assert report["checkpoint"].endswith(os.path.join("checkpoints", "30"))
  assert report["new"] == ["head/bias", "head/kernel", "head_norm/bias", "head_norm/scale"]
  assert any(n.startswith("encoder/blocks/") for n in report["loaded"])
  assert "tokenizers/image/patch_embed/kernel" in report["loaded"]
  assert any(n.startswith("decoder/") for n in report["unused"])
  assert not any(n.startswith("tokenizers/image") for n in report["unused"])
  assert report["resized"] == []
  rows = metrics_lib.read_jsonl(str(workdir))
  assert 0.0 <= rows[-1]["eval/classification/accuracy"] <= 1.0
  assert any("train/classification/accuracy" in r for r in rows)
