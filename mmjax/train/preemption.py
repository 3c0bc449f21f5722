"""Preemption: SIGTERM (the notice TPU VMs and SLURM send before taking the machines away)
makes a run save a checkpoint at the next step boundary and end normally (exit status 0);
running the same command again resumes from it. Ctrl-C (SIGINT) does the same, rather than a
KeyboardInterrupt traceback that leaves the steps since the last checkpoint to be trained (and
logged) again; a second Ctrl-C stops at once, without that checkpoint.

One process: our own handlers set a flag. Several processes: JAX's distributed runtime
receives the notice and `reached_preemption_sync_point` makes every process stop at the same
step, so that they all take part in the same checkpoint (Ctrl-C keeps Python's default there:
one process cannot stop the others at the same step).
"""
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

# What the run says when it stops at each signal.
_REASONS = {signal.SIGTERM: "Preempted (SIGTERM)", signal.SIGINT: "Interrupted (Ctrl-C)"}


class Watcher:
  """`reached(step)` is True once the run should save and stop; `reason` then says why. Use as
  a context manager."""

  def __init__(self):
    self.reason = None
    self._interrupted = False
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      for signum in _REASONS:
        self._previous[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self._interrupted:  # The second Ctrl-C: stop now.
        raise KeyboardInterrupt
      self._interrupted = True
      logging.warning("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C "
                      "again stops at once, without it).")
    self.reason = self.reason or _REASONS[signum]

  def reached(self, step):
    if not self._multi:
      return self.reason is not None
    try:
      stop = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError as e:  # The preemption service is off in this distributed runtime.
      if not getattr(self, "_warned", False):
        logging.warning("No preemption notices in this multi-process run: %s", e)
        self._warned = True
      return False
    if stop:
      self.reason = "Preempted"
    return stop
