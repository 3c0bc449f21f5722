"""Orbax checkpoints of the train state and the data loader's position.

One CheckpointManager per run under WORKDIR/checkpoints: asynchronous saves, keep the last K,
resume from the latest complete step. The train state is restored into abstract arrays that
carry the target shardings, so a checkpoint loads onto whatever mesh the run now has.
"""
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from mmjax.errors import UserError
from mmjax.train import init_from

STATE_ITEM, DATA_ITEM = init_from.STATE_ITEM, "data"  # Items of a step directory.
QUARANTINE = "quarantine"  # checkpoints/quarantine/<step>: steps that did not restore.


def manager(workdir, *, keep, every):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def save(mngr, step, state, data_iter, *, force=False):
  """Starts an asynchronous save (returns at once); `mngr.wait_until_finished()` joins it."""
  args = {STATE_ITEM: ocp.args.StandardSave(state)}
  if data_iter is not None:
    args[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iter)
  return mngr.save(step, args=ocp.args.Composite(**args), force=force)


def _first_line(error):
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def _saved_tree(step_dir):
  """The metadata tree of the train state saved in a step directory (shapes, no data)."""
  tree = init_from.state_metadata(step_dir)
  if "params" not in tree:
    raise ValueError(f"no {STATE_ITEM!r} item with params (not an mmjax train state)")
  return tree


def _other_model(saved, abstract_state):
  """Lines naming how a saved state's shapes differ from `abstract_state`'s ([] if they do
  not): the parameters by name, then the rest (optimizer state) by its leaves' shapes."""
  target, have = (init_from.flatten_shapes(t["params"]) for t in (abstract_state, saved))
  lines = [f"{k}: checkpoint {list(have[k])}, model {list(v)}"
           for k, v in target.items() if k in have and tuple(have[k]) != tuple(v)]
  lines += [f"{k}: only in the {'model' if k in target else 'checkpoint'}"
            for k in sorted(set(target) ^ set(have))]
  shapes = lambda tree: sorted(tuple(x.shape) for x in jax.tree.leaves(tree))
  if not lines and shapes(saved) != shapes(abstract_state):
    lines.append("the optimizer state has other arrays (another optimizer config)")
  return lines


def _quarantine(mngr, step, reason):
  """Moves step `step` to checkpoints/quarantine/ (process 0), for every process to skip."""
  source = os.path.join(str(mngr.directory), str(step))
  target = os.path.join(str(mngr.directory), QUARANTINE, str(step))
  logging.warning("Checkpoint step %d does not restore (%s): moved to %s; trying the step "
                  "before it.", step, reason, target)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    n = 1
    while os.path.exists(target):  # An earlier quarantine of the same step number.
      target, n = os.path.join(os.path.dirname(target), f"{step}.{n}"), n + 1
    os.rename(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"mmjax: quarantined checkpoint {step}")
  mngr.reload()


def _all_agree(ok):
  """Whether every process restored (each reads its own shards, so one may fail alone)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def restore_latest(mngr, abstract_state, data_iter):
  """Restores the latest checkpoint that restores, or returns None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings (the target layout).
  `data_iter`, if given, is moved to the saved position in place.

  A step that does not restore (a foreign folder, a missing item, a truncated or corrupt file)
  is moved to checkpoints/quarantine/ with a warning naming it and why, and the step before it
  is tried. A step whose shapes differ from `abstract_state` is not damaged but from another
  model: that is a UserError, and nothing is moved. If no step restores and some were moved
  aside (now or by an earlier launch), UserError: the run does not silently start afresh.
  """
  tried = []
  for step in sorted(mngr.all_steps(), reverse=True):
    step_dir = os.path.join(str(mngr.directory), str(step))
    try:
      saved = _saved_tree(step_dir)
    except Exception as e:  # pylint: disable=broad-except
      saved, reason = None, _first_line(e)
    if saved is not None:
      differ = _other_model(saved, abstract_state)
      if differ:
        raise UserError(
            f"Checkpoint step {step} in {mngr.directory} holds the train state of another "
            "model or optimizer than this config builds (the config differs from the run's):"
            "\n  " + "\n  ".join(differ[:10]))
      args = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None and os.path.isdir(os.path.join(step_dir, DATA_ITEM)):
        args[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iter)
      try:
        restored = mngr.restore(step, args=ocp.args.Composite(**args))
        reason = None
      except Exception as e:  # pylint: disable=broad-except
        reason = _first_line(e)
    if _all_agree(reason is None):
      if tried:
        logging.warning("Resumed from step %d, past %s.", step,
                        ", ".join(f"step {s}" for s in tried))
      return restored[STATE_ITEM]
    _quarantine(mngr, step, reason or "it failed on another process")
    tried.append(step)
  quarantine = os.path.join(str(mngr.directory), QUARANTINE)
  moved = sorted(os.listdir(quarantine)) if os.path.isdir(quarantine) else []
  if moved:  # Now or by an earlier launch: never a silent fresh start over a run's remains.
    raise UserError(
        f"No checkpoint in {mngr.directory} restores: steps {moved} did not and are in "
        f"{quarantine}. Resume from elsewhere, or move that folder away to start afresh (this "
        "run will not start afresh on its own).")
  return None


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
