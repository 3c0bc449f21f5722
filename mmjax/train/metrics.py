"""Metric writers: WORKDIR/metrics.jsonl (one JSON object per line) and TensorBoard events.

Only process 0 writes; the others get a writer that drops everything, so call sites need no
`if jax.process_index() == 0`.
"""
import json
import os

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard, images to WORKDIR/images/."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write_scalars(self, step, scalars):
    if not self.enabled:
      return
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      # TensorBoard tags cannot hold '@' (r@1 -> r1); metrics.jsonl keeps the real names.
      self._tb.add_scalar(name.replace("@", ""), value, int(step))
    self._tb.flush()

  def write_png(self, step, name, image_hwc):
    """Saves a uint8 [H,W,C] picture as images/<name>_<step>.png; returns its path."""
    if not self.enabled:
      return None
    from PIL import Image  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.join(self.workdir, "images"), exist_ok=True)
    path = os.path.join(self.workdir, "images", f"{name}_{int(step):06d}.png")
    array = np.asarray(image_hwc, np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    self._tb.add_image(name, array, int(step), dataformats="HWC")
    return path

  def close(self):
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def read_jsonl(workdir):
  """All metric rows of a run, in order (used by the results table and the tests)."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
