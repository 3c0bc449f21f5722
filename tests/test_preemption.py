"""SIGTERM (a preemption notice) at a step the test picks: the run saves there and exits 0, and
resuming it ends exactly where a run without the interruption ends."""
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8


def _config(runlocal_config):
  config = runlocal_config.copy_and_resolve_references()
  config.total_steps, config.log_every = STEPS, 1
  config.checkpoint_every = config.eval_every = 100  # Only the final (or preemption) save.
  config.model.scan_layers = True  # Compiles faster; the same function.
  return config


def _logged_steps(workdir):
  return [r["step"] for r in metrics_lib.read_jsonl(workdir) if "train/loss" in r] \
      if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else []


def _state(workdir, step):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                          "state"))


def test_sigterm_saves_exits_0_and_resumes_identically(runlocal_config, data_dir, tmp_path):
  config = _config(runlocal_config)
  straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
  trainer.train_and_evaluate(config, straight)

  notice_after = random.randint(1, STEPS - 3)
  proc = subprocess.Popen(
      [sys.executable, "main.py", "--config=configs/pretrain_digits.py:runlocal",
       f"--workdir={interrupted}", f"--config.total_steps={STEPS}", "--config.log_every=1",
       "--config.checkpoint_every=100", "--config.eval_every=100",
       "--config.model.scan_layers=True", f"--config.data.dir={data_dir}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for _ in range(6000):  # A timeout guard (5 minutes), not a speed check.
    if notice_after in _logged_steps(interrupted) or proc.poll() is not None:
      break
    time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail(f"step {notice_after} was never logged")
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output[-3000:]

  # It stopped at the next step boundary, saved exactly there, and said so.
  saved = sorted(int(s) for s in os.listdir(os.path.join(interrupted, "checkpoints")))
  assert len(saved) == 1 and notice_after <= saved[0] < STEPS, (notice_after, saved)
  assert _logged_steps(interrupted)[-1] == saved[0]
  assert f"Preempted (SIGTERM): saved a checkpoint at step {saved[0]}" in output

  trainer.train_and_evaluate(config, interrupted)  # The same command again: resume.
  a, b = _state(straight, STEPS), _state(interrupted, STEPS)
  jax.tree.map(np.testing.assert_array_equal, a, b)  # Bit for bit.
  losses = lambda w: {r["step"]: r["train/loss"] for r in metrics_lib.read_jsonl(w)
                      if "train/loss" in r}
  assert losses(interrupted) == losses(straight)
