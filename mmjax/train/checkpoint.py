"""Orbax checkpoints of the train state.

One CheckpointManager per run under WORKDIR/checkpoints: asynchronous saves, keep the last K,
resume from the latest complete step. The train state is restored into abstract arrays that
carry the target shardings, so a checkpoint loads onto whatever mesh the run now has.

The data position is not saved: the training stream is a function of the seed, and step t
starts at its batch t (mmjax.data.sampling.train_loader), so a resume is exact on any number of
processes and data workers. (Checkpoints of earlier versions hold a grain iterator item,
"data", per process; it is ignored.)
"""
import errno
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from mmjax.errors import UserError
from mmjax.train import init_from

STATE_ITEM = init_from.STATE_ITEM  # The item of a step directory.
QUARANTINE = "quarantine"  # checkpoints/quarantine/<step>: steps that did not restore.


def manager(workdir, *, keep, every):
  # cleanup_tmp_directories: a save killed half way leaves <step>.orbax-checkpoint-tmp-*, as
  # large as a checkpoint; the run holds the workdir's lock, so no other save is in flight.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=True, create=True,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


# A save needs room for the state's arrays plus Orbax's metadata, before the oldest kept step
# is deleted (after the new one is committed).
SPACE_MARGIN, SPACE_SLACK_BYTES = 1.1, 4 << 20


def save(mngr, step, state, *, force=False):
  """Starts an asynchronous save (returns at once); `wait(mngr)` joins it.

  A disk without room for it is a UserError naming the folder and the last saved step, raised
  before anything is written (a save that runs out of room half way makes Orbax's threads print
  thousands of lines): the checks of every process agree, so all stop together."""
  need = int(sum(x.nbytes for x in jax.tree.leaves(state)) * SPACE_MARGIN) + SPACE_SLACK_BYTES
  free = shutil.disk_usage(str(mngr.directory)).free
  if not _all_agree(free >= need):
    room = (f"that disk has {free / 2**20:.0f} MiB free" if free < need
            else "another process's disk has less free")
    raise UserError(f"No room to save step {step} in {mngr.directory}: a checkpoint takes about "
                    f"{need / 2**20:.0f} MiB and {room}. {_last_saved(mngr)}")
  try:
    return mngr.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state)}),
                     force=force)
  except Exception as e:  # pylint: disable=broad-except
    _raise_if_disk_full(mngr, e)
    raise


def wait(mngr):
  """Waits for the save in flight; a disk that filled up during it is a UserError."""
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    _raise_if_disk_full(mngr, e)
    raise


def _last_saved(mngr):
  step = mngr.latest_step()
  return ("Nothing is saved yet." if step is None else
          f"The last saved step is {step}: free some space and run the same command to resume "
          "from it.")


def _raise_if_disk_full(mngr, error):
  text = str(error)
  if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left" in text:
    raise UserError(f"The disk of {mngr.directory} is full (a save failed: "
                    f"{_first_line(error)[:160]}...). {_last_saved(mngr)}") from None


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
  logging.warning("Checkpoint step %d does not restore (%s) where an older step does: moved "
                  "to %s.", step, reason, target)
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


def restore_latest(mngr, abstract_state):
  """Restores the latest checkpoint that restores, or returns None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings (the target layout).

  Only damage is set aside: a step that does not restore (a foreign folder, a missing item, a
  truncated or corrupt file) while an older step of the same run does is moved to
  checkpoints/quarantine/ with a warning naming it and why, and the run resumes from the older
  one. If no step restores, the cause is not in one step (another Orbax, a machine that cannot
  hold the state, ...): nothing is moved and UserError names each step's reason. A step whose
  shapes differ from `abstract_state` is from another model: UserError, nothing moved. If no
  step is left but some were moved aside by an earlier launch, UserError too: the run does not
  silently start afresh over a run's remains.
  """
  failed = []  # (step, reason), newest first: moved aside once an older step restores.
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
      try:
        restored = mngr.restore(
            step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
        reason = None
      except Exception as e:  # pylint: disable=broad-except
        reason = _first_line(e)
    if _all_agree(reason is None):
      for bad, why in failed:  # An older step restores: the newer ones are damaged.
        _quarantine(mngr, bad, why)
      if failed:
        logging.warning("Resumed from step %d, past %s.", step,
                        ", ".join(f"step {s}" for s, _ in failed))
      return restored[STATE_ITEM]
    failed.append((step, reason or "it failed on another process"))
  if failed:
    raise UserError(
        f"No checkpoint in {mngr.directory} restores, so nothing was moved (a cause shared by "
        "every step is not damage to one):\n  " + "\n  ".join(
            f"step {s}: {why}" for s, why in failed) + "\nFix the cause, or move the steps "
        "away to start afresh (this run will not start afresh on its own).")
  quarantine = os.path.join(str(mngr.directory), QUARANTINE)
  moved = sorted(os.listdir(quarantine)) if os.path.isdir(quarantine) else []
  if moved:  # By an earlier launch: never a silent fresh start over a run's remains.
    raise UserError(
        f"No checkpoint in {mngr.directory} restores: steps {moved} did not and are in "
        f"{quarantine}. Resume from elsewhere, or move that folder away to start afresh (this "
        "run will not start afresh on its own).")
  return None


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
