"""Bad input gets one clear message before anything is built or compiled."""
import dataclasses
import os
import subprocess
import sys

import pytest

from configs import pretrain_digits
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_main(*args):
  return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120, check=False)


@pytest.mark.parametrize("key, value, message", [
    ("objectives.masked_image.mask_ratio", 1.5, "config.objectives.masked_image.mask_ratio=1.5"),
    ("optimizer.lr", -0.001, "config.optimizer.lr=-0.001"),
    ("model.fusion", "fused", "config.model.fusion='fused'"),
    ("model.size", "XXL", "config.model.size='XXL' is unknown"),
    ("batch_size", 12, "must be divisible by the data-parallel size 8"),
    ("parallel.grad_accum_steps", 3, "2 rows per device, which config.parallel.grad_accum_steps=3"),
    ("parallel.loop", "vmap", "config.parallel.loop='vmap' is out of range"),
    ("parallel.rules.mlp", "tensr", r"config.parallel.rules.mlp='tensr': \['tensr'\] are not"),
    ("mesh.fsdp", 3, "does not divide the 8 devices"),
    ("objectives.contrastive.impl", "ring", "config.objectives.contrastive.impl='ring'"),
    ("mesh.data", 4, "needs 4 devices, but 8 are available"),
    ("on_nonfinite", "ignore", "config.on_nonfinite='ignore' is out of range"),
    ("profile.steps", "5-7", "config.profile.steps='5-7': use 'START:END'"),
    ("parallel.rules.batch", "dat", r"config.parallel.rules.batch='dat': \['dat'\] are not"),
    ("objectives.masked_audio.norm_variance", "sample", "norm_variance='sample'"),
])
def test_out_of_range_values(tmp_path, key, value, message):
  config = pretrain_digits.get_config("runlocal")
  node, *_ = config, None
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_modality_the_dataset_lacks(runlocal_config, monkeypatch, tmp_path):
  real = loader.prepare
  monkeypatch.setattr(loader, "prepare", lambda cfg: dataclasses.replace(
      real(cfg), modalities=("image", "text")))
  with pytest.raises(UserError, match="config.objectives.masked_audio needs 'audio', but dataset "
                     r"'mmjax_digits' has only \['image', 'text'\]; set its weight to 0"):
    trainer.train_and_evaluate(runlocal_config.copy_and_resolve_references(), str(tmp_path))


def test_pmap_loop_is_data_parallel_only(tmp_path):
  config = pretrain_digits.get_config("runlocal,strategy=fsdp")
  config.parallel.loop = "pmap"
  with pytest.raises(UserError, match="loop='pmap' is data parallel only"):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_unknown_strategy(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal,strategy=zero3",
                     f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert "Unknown strategy 'zero3'" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  config = pretrain_digits.get_config("runlocal")
  with pytest.raises(UserError, match="--workdir=.*cannot be written"):
    trainer.train_and_evaluate(config, str(blocker / "run"))


def test_unknown_config_key_from_the_command_line(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal", f"--workdir={tmp_path}",
                     "--config.modle.size=S")
  assert result.returncode == 2
  assert "no key 'modle.size'. Did you mean 'model'?" in result.stderr
  assert "Traceback" not in result.stderr


def test_unknown_config_argument(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal,sise=S",
                     f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert "Unknown config argument 'sise'" in result.stderr
  assert "Traceback" not in result.stderr
