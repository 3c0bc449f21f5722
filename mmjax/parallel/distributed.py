"""Joining a multi-process JAX run (TPU pod slices, SLURM jobs, several processes on one host).

`main.py` calls `initialize(...)` once, before anything touches a device:

  initialize()                                           # single host, or a detected cluster
  initialize("10.0.0.1:1234", num_processes=4, process_id=2)   # explicit (launch_local.sh)

After it, `jax.devices()` lists every device of every process, `jax.process_index()` says which
process this is, and each process feeds only its share of every global batch.
"""
import os

import jax
import numpy as np
from absl import logging

from mmjax.errors import UserError
from mmjax.parallel import mesh as mesh_lib


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Starts JAX's distributed runtime if this process is one of several; else does nothing.

  Explicit arguments win; without them, a cluster job that JAX can join on its own (a TPU pod
  slice with several workers, a SLURM step with several tasks, an Open MPI job) is joined with
  `jax.distributed.initialize()`. Raises UserError for inconsistent arguments.
  """
  explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
  if explicit:
    _check_args(coordinator_address, num_processes, process_id)
    if num_processes > 1:
      _use_cpu_collectives()
      jax.distributed.initialize(coordinator_address=coordinator_address,
                                 num_processes=num_processes, process_id=process_id)
  else:
    cluster, count = _detect_cluster()
    if count > 1:
      logging.info("Detected a %s job with %d processes.", cluster, count)
      _use_cpu_collectives()
      jax.distributed.initialize()
  logging.info("Process %d of %d: %d local devices, %d in all (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


def _check_args(coordinator_address, num_processes, process_id):
  """UserError, naming the flag, unless all three are given and consistent."""
  missing = [name for name, value in (("--coordinator_address", coordinator_address),
                                      ("--num_processes", num_processes),
                                      ("--process_id", process_id)) if value is None]
  if missing:
    raise UserError(f"Missing {' and '.join(missing)}: a multi-process run needs "
                    "--coordinator_address=HOST:PORT, --num_processes=N and --process_id=I "
                    "together (or none of them, to run alone or let a cluster be detected).")
  host, _, port = str(coordinator_address).rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f"--coordinator_address={coordinator_address!r}: expected HOST:PORT, "
                    "e.g. 10.0.0.1:8476 (process 0's host and a free port).")
  if num_processes < 1:
    raise UserError(f"--num_processes={num_processes}: must be at least 1.")
  if not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id}: must be in [0, {num_processes}) for "
                    f"--num_processes={num_processes}.")


def _use_cpu_collectives():
  """Cross-process collectives on the CPU backend need an implementation (older JAX versions
  have none by default). Only the CPU backend reads this setting."""
  platforms = jax.config.jax_platforms  # From JAX_PLATFORMS; None lets JAX choose.
  if not platforms or "cpu" in platforms.split(","):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _detect_cluster():
  """(name, number of processes) of the cluster job JAX would join by itself, else ("", 1)."""
  try:
    # JAX's own detection, which jax.distributed.initialize() also uses; it is not public API,
    # hence the fallback below.
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    envs = [env for env in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
            if not env.opt_in_only_method]
  except (ImportError, AttributeError):
    envs = None
  if envs is not None:
    for env in envs:
      if env.is_env_present():
        return env.__name__, env.get_process_count()
    return "", 1
  # The variables JAX's SLURM detection reads; srun sets them for each task.
  if all(k in os.environ for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                                   "SLURM_PROCID", "SLURM_LOCALID")):
    return "SLURM", int(os.environ["SLURM_NTASKS"])
  return "", 1


def global_batch_from_full(batch, mesh, axes):
  """Global jax.Arrays, batch split over the batch `axes` (mesh.batch_axes), from a batch every
  process holds in full.

  For evaluation, where each process reads the same rows: each process transfers only the rows
  that its own devices hold, whatever the order of processes in the mesh. (Training batches,
  where each process holds only its own rows, go through `mesh_lib.host_to_global`.)
  """
  sharding = mesh_lib.batch_sharding(mesh, axes)

  def to_global(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(to_global, batch)
