"""Preemption: SIGTERM (the notice TPU VMs and SLURM send before taking the machines away)
makes a run save a checkpoint at the next step boundary and end normally (exit status 0);
running the same command again resumes from it.

One process: our own SIGTERM handler sets a flag. Several processes: JAX's distributed runtime
receives the notice and `reached_preemption_sync_point` makes every process stop at the same
step, so that they all take part in the same checkpoint.
"""
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils


class Watcher:
  """`reached(step)` is True once the run should save and stop. Use as a context manager."""

  def __init__(self):
    self._requested = False
    self._previous = None
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._requested = True

  def reached(self, step):
    if not self._multi:
      return self._requested
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError as e:  # The preemption service is off in this distributed runtime.
      if not getattr(self, "_warned", False):
        logging.warning("No preemption notices in this multi-process run: %s", e)
        self._warned = True
      return False
