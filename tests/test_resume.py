"""Long runs that survive: a run stopped any way resumes into exactly the run it would have been.

One straight 8-step run (checkpoints every 3 steps) is the reference for all of them:
- SIGKILL in the middle of an asynchronous save (of step 6), and then a workdir with worse in
  it (the last checkpoint truncated, a foreign folder among the steps): the resumed run starts
  from the last complete checkpoint that restores (3), never the half-written one, moves the
  damaged step and the folder to checkpoints/quarantine, ends bit for bit where the straight
  run ends, and trains on the same examples in the same order, none twice. Its metrics before
  the kill equal the straight run's bit for bit too (same config and seed, same metrics).
- SIGTERM (a preemption notice) at a step picked at random (seeded by MMJAX_TEST_SEED, default
  0, and printed) to a run reading with 2 data worker processes: exit 0, a checkpoint at that
  step, and a resume with no worker process that ends identical to the straight run, on the
  same examples, with no checkpoint set aside. (A resume on another number of processes is in
  test_train.py.)
- The step-3 checkpoint of the straight run (mesh data=8) resumed on data=2 x fsdp=4 (FSDP
  rules) and on 1 device: the losses continue within float tolerance.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.errors import UserError
from mmjax.parallel import sharding
from mmjax.train import checkpoint
from mmjax.train import monitors
from mmjax.train import trainer
from mmjax.train import workdir as workdir_lib

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY, BATCH = 8, 3, 8  # 64 examples: less than one epoch of the 140.
FLAGS = [f"--config.total_steps={STEPS}", "--config.log_every=1",
         f"--config.checkpoint_every={EVERY}", "--config.keep_checkpoints=3",
         "--config.eval_every=100", f"--config.batch_size={BATCH}",
         "--config.model.scan_layers=True", "--config.record_example_ids=True"]


def _config(runlocal_config):
  config = runlocal_config.copy_and_resolve_references()
  for flag in FLAGS:  # The same settings as the command lines below.
    key, value = flag[len("--config."):].split("=")
    node, *path = config, *key.split(".")
    for p in path[:-1]:
      node = node[p]
    node[path[-1]] = type(node[path[-1]])(value == "True" if value in ("True", "False")
                                          else int(value))
  config.evals = ml_collections.ConfigDict()  # Not what these tests are about.
  return config


def _main(workdir, data_dir, *, script="main.py", env=None, flags=()):
  return subprocess.Popen(
      [sys.executable, script, "--config=configs/pretrain_digits.py:runlocal",
       f"--workdir={workdir}", f"--config.data.dir={data_dir}", *FLAGS, *flags],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=env)


def _wait_for(proc, condition, what):
  for _ in range(6000):  # A guard against hanging forever (5 minutes), not a speed check.
    if condition():
      return
    if proc.poll() is not None:
      pytest.fail(f"the run ended before {what}:\n{proc.stdout.read()[-3000:]}")
    time.sleep(0.05)
  proc.kill()
  pytest.fail(f"timed out waiting for {what}")


def _rows(workdir, name="metrics.jsonl"):
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _logged_steps(workdir):
  return [r["step"] for r in _rows(workdir) if "train/loss" in r]


def _train_metrics(workdir, which=-1):
  """{step: every train metric but the speed (wall clock)}; of several records of a step (a
  resume repeats steps), the last one (which=-1) or the first (which=0)."""
  by_step = {}
  for r in _rows(workdir):
    if "train/loss" in r:
      by_step.setdefault(r["step"], []).append(
          {k: v for k, v in r.items() if k not in monitors.SPEED_METRICS})
  return {s: v[which] for s, v in by_step.items()}


def _losses(workdir):
  return {s: m["train/loss"] for s, m in _train_metrics(workdir).items()}


def _examples_trained_on(workdir):
  """Each step's example indices as the final model saw them: a resume rewrites the steps
  after its checkpoint, so the last record of each step counts."""
  by_step = {r["step"]: r["index"] for r in _rows(workdir, "example_ids.jsonl")}
  return [by_step[s] for s in sorted(by_step)]


def _checkpoints(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _state(workdir, step):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))


def _assert_same_state(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)  # Bit for bit.


@pytest.fixture(scope="module")
def straight(runlocal_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  trainer.train_and_evaluate(_config(runlocal_config), workdir)
  return workdir


def test_sigkill_during_async_save_and_damaged_checkpoints_resume_from_last_good(
    runlocal_config, data_dir, straight, tmp_path):
  workdir = str(tmp_path)
  proc = _main(workdir, data_dir, script="tests/hang_save_main.py",
               env=os.environ | {"HANG_SAVE_STEP": str(2 * EVERY)})
  # Killed while the save of step 6 is in flight (its data written, not yet committed) and
  # training has gone on to step 7.
  _wait_for(proc, lambda: os.path.exists(os.path.join(workdir, "save_hanging"))
            and 2 * EVERY + 1 in _logged_steps(workdir), "step 7 with the save of 6 hanging")
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # Left by the dead run.
  complete = [c for c in _checkpoints(workdir) if c.isdigit()]
  assert complete == [str(EVERY)], _checkpoints(workdir)
  assert any(c.startswith(f"{2 * EVERY}.") for c in _checkpoints(workdir))  # Orbax's tmp dir.
  # Same config and seed: the killed run's metrics so far equal the straight run's, bit for bit.
  before_kill = _train_metrics(workdir, which=0)
  assert len(before_kill) > 2 * EVERY
  assert before_kill == {s: _train_metrics(straight)[s] for s in before_kill}

  # Worse: a later step whose largest array file is cut in half, and a folder that is no
  # checkpoint, both newer than the last good step.
  shutil.copytree(os.path.join(straight, "checkpoints", str(STEPS)),
                  os.path.join(workdir, "checkpoints", str(STEPS)))
  _truncate_largest_array_file(os.path.join(workdir, "checkpoints", str(STEPS)))
  os.makedirs(os.path.join(workdir, "checkpoints", "99"))
  with open(os.path.join(workdir, "checkpoints", "99", "notes.txt"), "w",
            encoding="utf-8") as f:
    f.write("not a checkpoint")

  # The same command: it takes the dead run's lock over, sets the damaged steps aside and
  # resumes from the last good one.
  trainer.train_and_evaluate(_config(runlocal_config), workdir)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  quarantine = os.path.join(workdir, "checkpoints", "quarantine")
  assert sorted(os.listdir(quarantine)) == [str(STEPS), "99"]
  assert not [c for c in _checkpoints(workdir) if "tmp" in c]  # The killed save's is removed.
  assert _logged_steps(workdir)[len(before_kill):] == list(range(EVERY + 1, STEPS + 1))
  _assert_same_state(_state(straight, STEPS), _state(workdir, STEPS))
  assert _train_metrics(workdir) == _train_metrics(straight)
  seen = _examples_trained_on(workdir)
  assert seen == _examples_trained_on(straight)
  flat = [i for batch in seen for i in batch]
  assert len(flat) == STEPS * BATCH and len(set(flat)) == len(flat)


def test_sigterm_saves_exits_0_and_resumes_identically(
    runlocal_config, data_dir, straight, tmp_path):
  workdir = str(tmp_path)
  # A step picked at random, reproducibly: MMJAX_TEST_SEED=<seed> replays a failure.
  seed = int(os.environ.get("MMJAX_TEST_SEED", "0"))
  notice_after = random.Random(seed).randint(1, STEPS - 3)
  print(f"SIGTERM after step {notice_after} (MMJAX_TEST_SEED={seed})")
  proc = _main(workdir, data_dir, flags=["--config.data.num_workers=2"])
  _wait_for(proc, lambda: notice_after in _logged_steps(workdir), f"step {notice_after}")
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output[-3000:]
  # It stopped at the next step boundary, saved exactly there, and said so.
  stop = _logged_steps(workdir)[-1]
  assert notice_after <= stop < STEPS and str(stop) in _checkpoints(workdir)
  assert f"Preempted (SIGTERM): saved a checkpoint at step {stop}" in output

  # Resumed with no worker process (data.num_workers may change on resume): the examples are
  # those of the straight run, and no checkpoint is taken for damaged.
  trainer.train_and_evaluate(_config(runlocal_config), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "quarantine"))
  _assert_same_state(_state(straight, STEPS), _state(workdir, STEPS))
  assert _losses(workdir) == _losses(straight)
  assert _examples_trained_on(workdir) == _examples_trained_on(straight)


def _from_first_checkpoint(straight, workdir):
  os.makedirs(os.path.join(workdir, "checkpoints"))
  shutil.copytree(os.path.join(straight, "checkpoints", str(EVERY)),
                  os.path.join(workdir, "checkpoints", str(EVERY)))


def _assert_continues(straight, workdir):
  resumed, reference = _losses(workdir), _losses(straight)
  assert sorted(resumed) == list(range(EVERY + 1, STEPS + 1))
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)],
                             [reference[s] for s in sorted(resumed)], rtol=2e-4)


def test_resume_on_fsdp_mesh(runlocal_config, straight, tmp_path):
  config = _config(runlocal_config)
  config.mesh.data, config.mesh.fsdp = 2, 4
  config.parallel.rules = sharding.strategy_rules("fsdp")
  _from_first_checkpoint(straight, str(tmp_path))
  trainer.train_and_evaluate(config, str(tmp_path))
  _assert_continues(straight, str(tmp_path))


def test_resume_on_one_device(data_dir, straight, tmp_path):
  _from_first_checkpoint(straight, str(tmp_path))
  xla_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                       if not f.startswith("--xla_force_host_platform_device_count="))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = _main(str(tmp_path), data_dir, env=env | ({"XLA_FLAGS": xla_flags} if xla_flags else {}))
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output[-3000:]
  assert "on mesh {'data': 1, 'fsdp': 1, 'tensor': 1}" in output
  _assert_continues(straight, str(tmp_path))


def _copy_run(straight, workdir, steps):
  """`workdir` as the straight run would have left it with only these checkpoint steps."""
  os.makedirs(os.path.join(workdir, "checkpoints"))
  for name in (workdir_lib.FIRST_CONFIG_FILE, workdir_lib.HISTORY_FILE):
    shutil.copy(os.path.join(straight, name), workdir)
  for step in steps:
    shutil.copytree(os.path.join(straight, "checkpoints", str(step)),
                    os.path.join(workdir, "checkpoints", str(step)))


def test_a_second_run_in_a_locked_workdir_is_refused(runlocal_config, tmp_path):
  first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
  try:
    with open(tmp_path / workdir_lib.LOCK_FILE, "w", encoding="utf-8") as f:
      json.dump({"host": workdir_lib.socket.gethostname(), "pid": first.pid,
                 "started": "2026-01-01T00:00:00"}, f)
    with pytest.raises(UserError, match=rf"is in use by process {first.pid} on host"):
      trainer.train_and_evaluate(_config(runlocal_config), str(tmp_path))
  finally:
    first.kill()
    first.wait()
  assert not (tmp_path / workdir_lib.HISTORY_FILE).exists()  # Refused before writing anything.


def test_a_resume_that_changes_the_run_is_refused(runlocal_config, straight, tmp_path):
  _copy_run(straight, str(tmp_path), [EVERY])
  config = _config(runlocal_config)
  config.seed, config.batch_size, config.model.size = 1, 16, "S"
  config.init_from = straight
  with pytest.raises(UserError) as refused:
    trainer.train_and_evaluate(config, str(tmp_path))
  message = str(refused.value)
  for line in ("seed: 0 -> 1", f"batch_size: {BATCH} -> 16", "model.size: 'tiny' -> 'S'",
               f"init_from: '' -> {straight!r}",
               "--config.resume_overrides=batch_size,init_from,model.size,seed"):
    assert line in message, message
  assert "total_steps" not in message
  assert len(workdir_lib.history(str(tmp_path))) == 1


def test_a_resume_may_change_total_steps_and_the_history_keeps_both(
    runlocal_config, straight, tmp_path):
  _copy_run(straight, str(tmp_path), [STEPS])
  with open(os.path.join(straight, workdir_lib.FIRST_CONFIG_FILE), encoding="utf-8") as f:
    first = f.read()
  config = _config(runlocal_config)
  config.total_steps = STEPS - 1  # Already past it: restores, evaluates, trains nothing.
  trainer.train_and_evaluate(config, str(tmp_path))
  launches = workdir_lib.history(str(tmp_path))
  assert len(launches) == 2
  assert launches[0]["config"]["total_steps"] == STEPS
  assert launches[1]["config"]["total_steps"] == STEPS - 1
  assert launches[1]["changed"] == {"total_steps": [STEPS, STEPS - 1]}
  with open(tmp_path / workdir_lib.FIRST_CONFIG_FILE, encoding="utf-8") as f:
    assert f.read() == first  # Never rewritten.


def _truncate_largest_array_file(step_dir):
  files = [p for p in pathlib.Path(step_dir, "state").rglob("*") if p.is_file()
           and "/d/" in str(p)]
  largest = max(files, key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(largest.stat().st_size // 2)


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(runlocal_config, tmp_path):
  os.makedirs(tmp_path / "checkpoints" / "7")
  (tmp_path / "checkpoints" / "7" / "state").write_text("junk")
  for _ in range(2):  # And the same command again does not start afresh either.
    with pytest.raises(UserError, match=r"No checkpoint in .* restores, so nothing was moved"
                       r"(.|\n)*step 7: "):
      trainer.train_and_evaluate(_config(runlocal_config), str(tmp_path))
  # No older step restores, so nothing shows that step 7 alone is damaged: it stays.
  assert os.listdir(tmp_path / "checkpoints") == ["7"]
  # One set aside by an earlier launch, and nothing left: not a fresh start either.
  os.makedirs(tmp_path / "checkpoints" / "quarantine")
  os.rename(tmp_path / "checkpoints" / "7", tmp_path / "checkpoints" / "quarantine" / "7")
  with pytest.raises(UserError, match=r"No checkpoint in .* restores: steps \['7'\]"):
    trainer.train_and_evaluate(_config(runlocal_config), str(tmp_path))


def test_a_full_disk_stops_with_one_message_naming_the_last_saved_step(
    runlocal_config, straight, tmp_path, monkeypatch):
  """The straight run's step 3 resumed on a disk with 1 MiB free: step 6 is refused before
  anything is written, in one message naming the folder and step 3; step 3 stays whole, the
  lock is released."""
  _copy_run(straight, str(tmp_path), [EVERY])
  real = shutil.disk_usage
  monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1 << 20))
  with pytest.raises(UserError) as full:
    trainer.train_and_evaluate(_config(runlocal_config), str(tmp_path))
  message = str(full.value)
  assert f"No room to save step {2 * EVERY} in {tmp_path / 'checkpoints'}" in message, message
  assert f"The last saved step is {EVERY}" in message, message
  assert _checkpoints(str(tmp_path)) == [str(EVERY)]
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)


def test_a_killed_saves_temporary_folder_is_removed_at_the_next_start(tmp_path):
  # What a save killed half way leaves (the OOM kill left 6.9 GB of it at step 5).
  killed = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp" / "state"
  killed.mkdir(parents=True)
  (killed / "d").write_bytes(b"\0" * 1024)
  mngr = checkpoint.manager(str(tmp_path), keep=3, every=1)
  # Orbax removes it in a background thread started with the manager (a save waits for it).
  for _ in range(600):  # A guard against waiting forever (60 s), not a speed check.
    if not os.listdir(tmp_path / "checkpoints"):
      break
    time.sleep(0.1)
  mngr.close()
  assert os.listdir(tmp_path / "checkpoints") == []
