"""Several processes as one run: scripts/launch_local.sh (2 processes x 4 CPU devices) trains
the same 5 steps as one process with 8 devices, to the same losses; and the pieces of
mmjax.parallel.distributed that run without a second process."""
import os
import pathlib
import signal
import subprocess

import numpy as np
import pytest

from mmjax.errors import UserError
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib
from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 5
TIMEOUT_S = 600  # Generous: the first compile under a busy 2-core CI machine takes minutes.


def _launch_local(num_processes, args, log_dir):
  """Runs scripts/launch_local.sh; returns its exit status and combined output."""
  env = dict(os.environ, LOG_DIR=str(log_dir), LOCAL_DEVICES="4")
  # conftest's 8 devices are for this process: the script drops that flag, keeps the others
  # (the same compiler settings as the one-process reference), and sets 4 per process.
  # Its own session, so that a timeout can stop the script and every process it started.
  proc = subprocess.Popen(
      [str(REPO / "scripts" / "launch_local.sh"), str(num_processes), *args], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    output, _ = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate()
    output += f"\n[timed out after {TIMEOUT_S} s]"
  return proc.returncode, output


def _logs(log_dir):
  return "\n".join(f"===== {p.name} (last 60 lines) =====\n" +
                   "\n".join(p.read_text(errors="replace").splitlines()[-60:])
                   for p in sorted(pathlib.Path(log_dir).glob("process_*.log")))


def _losses(workdir):
  return {r["step"]: r["train/loss"] for r in metrics_lib.read_jsonl(workdir) if "train/loss" in r}


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
  workdir, log_dir = tmp_path_factory.mktemp("mp_run"), tmp_path_factory.mktemp("mp_logs")
  status, output = _launch_local(2, [
      "--config=configs/pretrain_digits.py:runlocal", f"--workdir={workdir}",
      f"--config.total_steps={STEPS}", "--config.log_every=1", f"--config.data.dir={data_dir}",
      "--config.model.scan_layers=True",  # Compiles faster; the same function.
  ], log_dir)
  assert status == 0, f"launch_local.sh exited with {status}:\n{output[-4000:]}\n{_logs(log_dir)}"
  return str(workdir)


def test_two_processes_train_and_write_metrics_once(two_process_run):
  rows = metrics_lib.read_jsonl(two_process_run)
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps == list(range(1, STEPS + 1))  # Once each: only process 0 writes.
  evals = [r for r in rows if any(k.startswith("eval/retrieval/") for k in r)]
  # One evaluation, at the last step; test_two_processes_match_one_process checks its values.
  assert [r["step"] for r in evals] == [STEPS]
  assert os.listdir(os.path.join(two_process_run, "images")) == ["reconstruction_000005.png"]


def test_two_processes_match_one_process(two_process_run, runlocal_config, tmp_path):
  config = runlocal_config.copy_and_resolve_references()
  config.total_steps, config.log_every = STEPS, 1
  config.model.scan_layers = True
  one = str(tmp_path)
  trainer.train_and_evaluate(config, one)  # 8 devices in this process (conftest).
  # Same global batches and the same 8-way data parallelism, only split over two processes.
  np.testing.assert_allclose(_losses(two_process_run)[STEPS], _losses(one)[STEPS], rtol=1e-5)
  # The evaluators too: each process fed its devices' rows of the same eval batches.
  two_evals, one_evals = ({k: v for r in metrics_lib.read_jsonl(w) for k, v in r.items()
                           if k.startswith("eval/")} for w in (two_process_run, one))
  assert sorted(two_evals) == sorted(one_evals)
  for name, value in one_evals.items():
    np.testing.assert_allclose(two_evals[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


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
