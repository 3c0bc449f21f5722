"""What a launch leaves in its workdir, checked without training (nothing here compiles):

- the lock: two launches that take over a dead run's lock at once, interleaved at the worst
  moment, cannot both win;
- the launch history: a launch that fails before it trains records nothing, so neither its
  config.json nor its config becomes the run's;
- paths: '~' and $VARIABLES in --workdir, --config and the config's path fields expand;
- Ctrl-C: stops at the next step as SIGTERM does, and a resumed run's example log has each
  step once.
"""
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from mmjax.errors import UserError
from mmjax.train import monitors
from mmjax.train import preemption
from mmjax.train import trainer
from mmjax.train import validate
from mmjax.train import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- The lock.


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _taken_over_by_another_launch(directory):
  """Whether a launch holds the takeover guard (WORKDIR/lock.takeover flock()ed) now."""
  path = os.path.join(directory, "lock.takeover")
  if not os.path.exists(path):
    return False
  fd = os.open(path, os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  finally:
    os.close(fd)


@pytest.mark.parametrize("moment", ["judged stale", "inside the takeover"])
def test_two_takeovers_of_a_dead_runs_lock_one_wins(tmp_path, monkeypatch, moment):
  """Launch A finds the lock of a dead run and judges it stale; at that moment (before it
  takes the takeover guard, or once inside it) launch B runs its whole takeover. Without an
  atomic takeover A then removes B's fresh lock and both run."""
  stale = {"host": socket.gethostname(), "pid": _dead_pid(), "started": "2026-01-01T00:00:00"}
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(stale))
  outcomes = {}

  def launch(name):
    lock = workdir_lib._Lock(str(tmp_path))  # pylint: disable=protected-access
    try:
      lock.acquire()
      outcomes[name] = lock
    except UserError as e:
      outcomes[name] = str(e)

  real_holder = workdir_lib._holder  # pylint: disable=protected-access

  def holder(path, owner):
    verdict = real_holder(path, owner)
    at_moment = (moment == "judged stale"
                 or _taken_over_by_another_launch(os.path.dirname(path)))
    if verdict is None and owner == stale and "B" not in outcomes and at_moment:
      outcomes["B"] = "running"
      launch("B")
    return verdict

  monkeypatch.setattr(workdir_lib, "_holder", holder)
  launch("A")
  winners = [n for n, o in outcomes.items() if isinstance(o, workdir_lib._Lock)]  # pylint: disable=protected-access
  try:
    assert sorted(outcomes) == ["A", "B"], outcomes
    assert len(winners) == 1, f"both launches hold the lock: {outcomes}"
    loser = outcomes[({"A", "B"} - set(winners)).pop()]
    assert "two runs in one workdir would overwrite each other's checkpoints" in loser, loser
    with open(tmp_path / workdir_lib.LOCK_FILE, encoding="utf-8") as f:
      assert json.load(f)["pid"] == os.getpid()  # The winner's, the dead run's gone.
  finally:
    for name in winners:
      outcomes[name].release()
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_a_lock_left_by_a_dead_process_with_our_pid_is_taken_over(tmp_path):
  """A restarted container numbers its processes alike: a lock with this process's pid that
  no lock of this process holds is a dead run's."""
  (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(
      {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00"}))
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(UserError, match=r"in use by this process"):
      with workdir_lib.lock(str(tmp_path)):
        pass
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


# --- The launch history.


def _config(runlocal_config, **changes):
  config = runlocal_config.copy_and_resolve_references()
  config.model.scan_layers = True  # Shapes in a second.
  for key, value in changes.items():
    node, *path = config, *key.split(".")
    for part in path[:-1]:
      node = node[part]
    node[path[-1]] = value
  return config


def test_a_launch_that_fails_in_set_up_records_nothing(runlocal_config, tmp_path):
  """Issue 22, case 1: a first launch with a batch larger than the split. The correct launch
  that follows is then a first launch: its config is the run's."""
  with pytest.raises(UserError, match="fewer than batch_size=256"):
    trainer.train_and_evaluate(_config(runlocal_config, batch_size=256), str(tmp_path))
  assert not (tmp_path / workdir_lib.FIRST_CONFIG_FILE).exists()
  assert workdir_lib.history(str(tmp_path)) == []

  # A launch that trained but saved no checkpoint (a NaN at step 2) started no run to resume:
  # the next launch's config replaces its config.json. Once there is a checkpoint, it stays.
  workdir_lib.record_launch(str(tmp_path), _config(runlocal_config, batch_size=32))
  workdir_lib.record_launch(str(tmp_path), _config(runlocal_config))
  os.makedirs(tmp_path / "checkpoints" / "5")
  workdir_lib.record_launch(str(tmp_path), _config(runlocal_config, total_steps=20))
  with open(tmp_path / workdir_lib.FIRST_CONFIG_FILE, encoding="utf-8") as f:
    first = json.load(f)
  assert (first["batch_size"], first["total_steps"]) == (16, 10)
  assert [h["config"]["batch_size"] for h in workdir_lib.history(str(tmp_path))] == [32, 16, 16]


def test_a_resume_refused_at_restore_is_not_the_last_launch(runlocal_config, tmp_path):
  """Issue 22, case 2: a resume with resume_overrides=model.size that then fails at restore
  must not become the launch the original command is compared with."""
  original = _config(runlocal_config)
  workdir_lib.record_launch(str(tmp_path), original)  # The launch that trained...
  step = tmp_path / "checkpoints" / "2"
  os.makedirs(step)
  (step / "state").write_text("not the train state of a size S model")  # ...and its step.
  with pytest.raises(UserError):
    trainer.train_and_evaluate(
        _config(runlocal_config, **{"model.size": "S", "resume_overrides": "model.size"}),
        str(tmp_path))
  assert [h["config"]["model"]["size"] for h in workdir_lib.history(str(tmp_path))] == ["tiny"]
  assert workdir_lib.check_resume(str(tmp_path), original) == {}  # The original command.


# --- Paths.


def test_workdir_and_config_paths_expand_home_and_variables(
    runlocal_config, data_dir, monkeypatch, tmp_path):
  """`--workdir=~/x` was a folder named '~' in the current directory (and `rm -rf ~` meant
  for it deletes the home directory)."""
  home, cwd = tmp_path / "home", tmp_path / "cwd"
  home.mkdir()
  cwd.mkdir()
  (home / "data").symlink_to(data_dir)
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setenv("MMJAX_TEST_DATA", data_dir)
  monkeypatch.chdir(cwd)
  config = _config(runlocal_config, **{"data.dir": "~/data", "batch_size": 256})
  # Stopped in set-up (the batch), once the workdir and the data are where they belong.
  with pytest.raises(UserError, match="fewer than batch_size=256"):
    trainer.train_and_evaluate(config, "~/runs/x")
  assert os.listdir(cwd) == []
  assert (home / "runs" / "x").is_dir()

  config = _config(runlocal_config, **{"data.dir": "~/data", "data.vocab_file": "${VOCABS}/v",
                                       "init_from": "$MMJAX_TEST_DATA/run"})
  monkeypatch.setenv("VOCABS", "/vocabs")
  expanded, workdir = validate.expand_paths(config, "$MMJAX_TEST_DATA/w")
  assert (expanded.data.dir, expanded.data.vocab_file, expanded.init_from, workdir) == (
      f"{home}/data", "/vocabs/v", f"{data_dir}/run", f"{data_dir}/w")
  assert config.data.dir == "~/data"  # The caller's config is left as it was.
  monkeypatch.delenv("SCRATCH", raising=False)
  with pytest.raises(UserError, match=r"--workdir='\$SCRATCH/x': the environment variable "
                     r"\$SCRATCH is not set"):
    validate.expand_paths(config, "$SCRATCH/x")


def test_main_expands_its_path_flags(data_dir, tmp_path):
  """--config and --workdir from the command line, where the shell leaves '~' after '='; the
  run then stops on an unknown train split: one line, exit 2, nothing compiled."""
  home, cwd = tmp_path / "home", tmp_path / "cwd"
  home.mkdir()
  cwd.mkdir()
  (home / "my_config.py").write_text("from configs.pretrain_digits import get_config\n")
  env = dict(os.environ, HOME=str(home), MMJAX_TEST_DATA=data_dir, PYTHONPATH=REPO,
             JAX_LOG_COMPILES="1")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"), "--config=~/my_config.py:runlocal",
       "--workdir=~/runs/x", "--config.data.dir=$MMJAX_TEST_DATA",
       "--config.data.train_split=trian"],
      cwd=cwd, capture_output=True, text=True, timeout=300, check=False, env=env)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert errors == ["error: data.train_split='trian': dataset 'mmjax_digits' has no split "
                    "'trian'; it has ['test', 'train', 'validation']."], result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert "Compiling " not in result.stderr and "Finished XLA compilation" not in result.stderr
  assert os.listdir(cwd) == [] and (home / "runs" / "x").is_dir()


# --- Ctrl-C.


def test_ctrl_c_stops_at_the_next_step_as_sigterm_does():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.Watcher() as watcher:
    assert not watcher.reached(1)
    try:
      signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
      pytest.fail("Ctrl-C raised KeyboardInterrupt (a traceback, no checkpoint) instead of "
                  "stopping at the next step")
    assert watcher.reached(2) and watcher.reason == "Interrupted (Ctrl-C)"
    with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C stops at once.
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is previous


def test_a_resumed_example_log_has_each_step_once(tmp_path):
  """A launch logged steps 1-7 and was stopped with its last checkpoint at step 5 (the last
  line cut short by a kill): the resume from step 5 logs steps 6 and 7 again, once each."""
  first = monitors.ExampleLog(str(tmp_path), True, 0)
  for step in range(1, 8):
    first.write(step, [10 * step, 10 * step + 1])
  first.close()
  with open(tmp_path / "example_ids.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 8, "ind')
  resumed = monitors.ExampleLog(str(tmp_path), True, 5)
  for step in (6, 7):
    resumed.write(step, [100 * step, 100 * step + 1])
  resumed.close()
  with open(tmp_path / "example_ids.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
  assert rows[4]["index"] == [50, 51] and rows[5]["index"] == [600, 601]
