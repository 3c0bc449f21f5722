"""The pieces of mmjax.parallel.distributed that run without a second process. (Two processes
as one run, scripts/launch_local.sh against one process, is in test_train.py: it is the first
launch of that file's trained run, which is its one-process reference.)"""
import numpy as np
import pytest

from mmjax.errors import UserError
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=2), "Missing --coordinator_address and --process_id"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator_address="localhost:99999", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), r"\[0, 2\)"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0), "at least 1"),
])
def test_initialize_rejects_bad_flags(kwargs, message):
  with pytest.raises(UserError, match=message):
    distributed.initialize(**kwargs)


def test_detects_a_slurm_step(monkeypatch):
  for name in ("OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
               "KUBERNETES_SERVICE_HOST"):
    monkeypatch.delenv(name, raising=False)
  slurm = dict(SLURM_JOB_ID="17", SLURM_STEP_NODELIST="node[01-02]", SLURM_NTASKS="16",
               SLURM_PROCID="3", SLURM_LOCALID="3")
  for name in slurm:
    monkeypatch.delenv(name, raising=False)
  assert distributed._detect_cluster()[1] == 1  # pylint: disable=protected-access
  for name, value in slurm.items():
    monkeypatch.setenv(name, value)
  assert distributed._detect_cluster()[1] == 16  # pylint: disable=protected-access


def test_global_batch_from_full_places_each_row_on_its_device():
  mesh = mesh_lib.make_mesh({"data": -1})
  batch = {"x": np.arange(16 * 3).reshape(16, 3), "valid": np.arange(16) < 13}
  arrays = distributed.global_batch_from_full(batch, mesh, ("data", "fsdp"))
  for name, array in arrays.items():
    np.testing.assert_array_equal(np.asarray(array), batch[name])
    sharding = mesh_lib.batch_sharding(mesh, ("data", "fsdp"))
    assert array.sharding.is_equivalent_to(sharding, array.ndim)
    assert {s.data.shape[0] for s in array.addressable_shards} == {2}
