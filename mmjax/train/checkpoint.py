"""Orbax checkpoints of the train state and the data loader's position.

One CheckpointManager per run under WORKDIR/checkpoints: asynchronous saves, keep the last K,
resume from the latest complete step. The train state is restored into abstract arrays that
carry the target shardings, so a checkpoint loads onto whatever mesh the run now has.
"""
import os

import grain
import jax
import orbax.checkpoint as ocp


def manager(workdir, *, keep, every):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, save_interval_steps=every, enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def save(mngr, step, state, data_iter, *, force=False):
  """Starts an asynchronous save (returns at once); `mngr.wait_until_finished()` joins it."""
  args = {"state": ocp.args.StandardSave(state)}
  if data_iter is not None:
    args["data"] = grain.checkpoint.CheckpointSave(data_iter)
  return mngr.save(step, args=ocp.args.Composite(**args), force=force)


def restore_latest(mngr, abstract_state, data_iter):
  """Restores the latest complete checkpoint, or returns None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings (the target layout).
  `data_iter`, if given, is moved to the saved position in place.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  args = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None and "data" in (mngr.item_metadata(step) or {}):
    args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = mngr.restore(step, args=ocp.args.Composite(**args))
  return restored["state"]


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
