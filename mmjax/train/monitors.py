"""What the training loop watches and records beside the step: the non-finite guard
(config.on_nonfinite), the log of each step's examples (config.record_example_ids), wall-clock
speed and MFU between log steps, and a profiler trace of chosen steps (config.profile.steps).
"""
import json
import os
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmjax import paths
from mmjax.errors import NonFiniteError
from mmjax.train import mfu
from mmjax.train import validate


# Metrics of wall-clock speed: they differ between runs of the same config and seed.
SPEED_METRICS = ("train/examples_per_sec", "train/step_seconds", "train/tflops_per_device",
                 "train/mfu", "train/useful_tflops_per_device", "train/mfu_useful")
MAX_SKIPS_IN_A_ROW = 20  # on_nonfinite='skip' stops after this many non-finite steps in a row.


class NonFiniteGuard:
  """Applies config.on_nonfinite to each step's metrics, once the step has finished.

  The step itself never applies a non-finite update (optimizer.make), so the state stays
  usable: 'stop' raises NonFiniteError naming the step and the first non-finite metric;
  'skip' logs it and carries on (train/skipped_steps counts them), unless
  MAX_SKIPS_IN_A_ROW steps in a row are non-finite.
  """

  def __init__(self, policy, last_checkpoint):
    self.policy, self._last_checkpoint, self._checked = policy, last_checkpoint, 0

  def check(self, step, metrics):
    """`metrics`: step `step`'s metrics (device arrays of a finished step, or host floats)."""
    if step <= self._checked:
      return
    self._checked = step
    streak = int(jax.device_get(metrics["train/nonfinite_streak"]))
    if not streak:
      return
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    # Name the most specific culprit: an objective's loss before the total, then the gradients.
    order = sorted(scalars, key=lambda k: (not k.startswith("train/loss/"), k != "train/loss", k))
    name = next((k for k in order if not np.isfinite(scalars[k])), "train/grad_norm")
    what = f"Step {step}: {name} is {scalars[name]}"
    if self.policy == "skip" and streak < MAX_SKIPS_IN_A_ROW:
      logging.warning("%s; the update was skipped (%d skipped steps so far).", what,
                      int(scalars["train/skipped_steps"]))
      return
    last = self._last_checkpoint()
    why = (f"{streak} steps in a row were non-finite" if self.policy == "skip" else
           "config.on_nonfinite='stop'")
    raise NonFiniteError(
        f"{what}. The update was not applied and the run stopped ({why}); "
        + (f"the last checkpoint is at step {last}. " if last is not None else
           "there is no checkpoint yet. ")
        + "Lower optimizer.lr, check the data, or set --config.on_nonfinite=skip to skip "
        "non-finite steps and count them.")


class ExampleLog:
  """WORKDIR/example_ids.jsonl: each step's global batch as split indices (config.
  record_example_ids), to audit the data order, e.g. across a resume.

  A run resumed at `start_step` trains the steps after it again, so their records from the
  launch that stopped (killed, or Ctrl-C'd before this one saved) are dropped when the log
  opens: each step appears once, with the examples the final model saw."""

  def __init__(self, workdir, enabled, start_step):
    self._file = None
    path = os.path.join(workdir, "example_ids.jsonl")
    if jax.process_index() == 0 and os.path.exists(path):
      _keep_steps_up_to(path, start_step)
    if enabled and jax.process_index() == 0:
      self._file = open(path, "a", encoding="utf-8")
    self._enabled = enabled

  def write(self, step, index):
    if not self._enabled:
      return
    if jax.process_count() > 1:
      index = multihost_utils.process_allgather(index, tiled=True)
    if self._file:
      self._file.write(json.dumps({"step": step, "index": np.asarray(index).tolist()}) + "\n")
      self._file.flush()

  def close(self):
    if self._file:
      self._file.close()


def _keep_steps_up_to(path, last_step):
  """Rewrites the JSON-lines log at `path` (atomically) with one record per step up to
  `last_step`, the latest of each; a line cut short by a kill is dropped."""
  kept = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        step = json.loads(line)["step"]
      except (ValueError, TypeError, KeyError):
        continue
      if step <= last_step:
        kept[step] = line if line.endswith("\n") else line + "\n"
  with paths.atomic_open(path) as f:
    f.writelines(kept[step] for step in sorted(kept))


class SpeedLog:
  """Wall-clock speed between log steps (compile and evals left out): step time, examples/s,
  TFLOP/s and MFU (executed matmul FLOPs per device per second / the device's peak, mfu.py)."""

  def __init__(self, config, start_step):
    self._batch_size = config.batch_size
    self._peak, source = mfu.peak_flops_per_device(config.model.dtype)
    logging.info("MFU against %s.", source)
    self.flops_per_device = None  # From the traced step, at the first step.
    self._time, self._step = time.perf_counter(), start_step

  def restart(self, step=None):
    """Counts from now (after a compile or an eval)."""
    self._time = time.perf_counter()
    self._step = self._step if step is None else step

  def add(self, step, scalars):
    """Adds the speed metrics to `scalars` (host floats); returns the progress bar's postfix."""
    now = time.perf_counter()
    seconds = (now - self._time) / (step - self._step)
    self._time, self._step = now, step
    scalars["train/step_seconds"] = seconds
    scalars["train/examples_per_sec"] = self._batch_size / seconds
    scalars["train/tflops_per_device"] = self.flops_per_device / seconds / 1e12
    postfix = {"loss": f"{scalars['train/loss']:.3f}",
               "ex/s": f"{scalars['train/examples_per_sec']:.0f}"}
    useful = scalars.pop("train/useful_flops", None)  # This step's, global.
    if useful is not None:
      useful /= jax.device_count()
      scalars["train/useful_tflops_per_device"] = useful / seconds / 1e12
    if self._peak:
      scalars["train/mfu"] = self.flops_per_device / seconds / self._peak
      postfix["mfu"] = f"{scalars['train/mfu']:.2f}"
      if useful is not None:
        scalars["train/mfu_useful"] = useful / seconds / self._peak
    return postfix


class Profile:
  """A JAX profiler trace of steps config.profile.steps ('START:END') into
  WORKDIR/tensorboard."""

  def __init__(self, config, workdir):
    self._steps = validate.profile_steps(config)
    self._dir = os.path.join(workdir, "tensorboard")
    self._on = False

  def before(self, step):
    if self._steps and step == self._steps[0] and jax.process_index() == 0:
      jax.profiler.start_trace(self._dir)
      self._on = True

  def after(self, step, metrics):
    if self._on and step == self._steps[1]:
      jax.block_until_ready(metrics)
      self.stop()
      logging.info("Profile of steps %d-%d: %s/plugins/profile/ (TensorBoard's profile tab, or "
                   "the .trace.json.gz in Perfetto).", *self._steps, self._dir)

  def stop(self):
    if self._on:
      jax.profiler.stop_trace()
      self._on = False
