"""Sweeps (mmjax/sweep/): bad sweep files get one clear message (the shipped ones:
test_ablation_files.py); SLURM gets an array script; a stage that stopped before its
total_steps (main.py exits 0 when preempted) is not done, locally or on SLURM, result.json is
written whole or not at all, and a task's seconds add up all its runs; a one-point, two-seed
sweep runs end to end through the runner, a stage SIGTERMed half-way resumes, each result is
what its run logged at its final step, and the plain runlocal point matches the checked-in
reference curve.
Baselines, config hashes and adopting a report: test_sweep_tasks.py; claims:
test_sweep_claims.py."""
import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from mmjax import provenance
from mmjax import sweep as sweep_lib
from mmjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
WITH_CLAIMS = REPO / "tests" / "sweep_with_claims.py"
REFERENCE = REPO / "configs" / "reference" / "pretrain_digits_runlocal.json"


def _write(tmp_path, body):
  path = tmp_path / "bad_sweep.py"
  path.write_text(textwrap.dedent("""\
      from mmjax.sweep import Downstream, Sweep, product
      def get_sweep():
        return Sweep(base="configs/pretrain_digits.py:runlocal", x="objectives.masked_image.mask_ratio",
      """) + textwrap.indent(textwrap.dedent(body), "               ") + ")\n")
  return str(path)


@pytest.mark.parametrize("body, message", [
    ("points=[], metrics=('pretrain/eval/retrieval/text_to_image/r@1',)", "has no points"),
    ("points=[{'objectives.masked_image.mask_raito': 0.5}],"
     " metrics=('pretrain/eval/retrieval/text_to_image/r@1',)", "no key 'mask_raito'"),
    ("points=product(objectives__masked_image__mask_ratio=(0.5,)),"
     " metrics=('pretrain/eval/classification/accuracy',)", "runs no evaluator 'classification'"),
    ("points=product(objectives__masked_image__mask_ratio=(0.5,)),"
     " metrics=('probe/eval/classification/accuracy',)", "no stage 'probe'"),
    ("points=product(objectives__masked_image__mask_ratio=(1.5,)),"
     " metrics=('pretrain/eval/retrieval/text_to_image/r@1',)", "mask_ratio"),
])
def test_bad_sweep_file_gets_one_clear_message(tmp_path, body, message):
  path = _write(tmp_path, body)
  with pytest.raises(UserError, match=re.escape(message)):
    sweep_lib.check(sweep_lib.load_sweep(path), path)


def test_slurm_writes_an_array_job_with_one_task_per_point_and_seed(tmp_path, capsys):
  """One array task per point x seed, then per baseline x seed (its downstream stages alone,
  without init_from, with the baseline's overrides)."""
  assert sweep_lib.main([f"--sweep={WITH_CLAIMS}", f"--workdir={tmp_path}",
                         "--launcher=slurm"]) == 0
  script = (tmp_path / "sweep.sbatch").read_text()
  sweep = sweep_lib.load_sweep(str(WITH_CLAIMS))
  entries = sweep_lib.spec.entries(sweep)
  n = len(entries) * len(sweep.seeds)
  assert f"#SBATCH --array=0-{n - 1}" in script
  branches = re.findall(r"^  (\d+)\)\n(.*?)\n    ;;", script, re.M | re.S)
  assert [int(i) for i, _ in branches] == list(range(n))
  for i, body in branches:
    (_, overrides, baseline), seed = (entries[int(i) // len(sweep.seeds)],
                                      sweep.seeds[int(i) % len(sweep.seeds)])
    commands = re.findall(r"\S*python\S* \S*main.py .*?\|\| rc=", body)
    assert len(commands) == len(sweep.downstream) + (not baseline), body
    assert len(re.findall(r"stage-done \S+ --total-steps=\d+ \|\| \{", body)) == len(commands)
    assert all(f"--config.seed={seed}" in c for c in commands)
    if baseline:
      assert not any("--config.init_from=" in c for c in commands)
      assert all(f"--config.{k}={v} " in c for c in commands for k, v in overrides.items())
    else:
      ratio = overrides["objectives.masked_image.mask_ratio"]
      assert f"--config.objectives.masked_image.mask_ratio={ratio} " in commands[0]
      assert all("--config.init_from=" in c for c in commands[1:])
  assert "--collect" in script
  assert f"{n} array tasks" in capsys.readouterr().out


# One point: a pretraining and a probe stage, each run by FAKE_MAIN instead of main.py.
FAKE_SWEEP = """\
from mmjax.sweep import LABEL, Downstream, Sweep

def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py", points=[{LABEL: "runlocal"}], x=LABEL, seeds=(0,),
      downstream={"probe": Downstream("configs/pretrain_digits.py")},
      metrics=("pretrain/eval/retrieval/text_to_image/r@1", "probe/train/loss"))
"""
# Trains --workdir from its latest checkpoint to step $FAKE_STEP as a run that stops there
# leaves it (each step logged, a checkpoint of the last, argv[-1] its state item's name), and
# exits 0, as main.py does when a SIGTERM stops it early.
FAKE_MAIN = """\
import json, os, sys
workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
checkpoints, stop = os.path.join(workdir, "checkpoints"), int(os.environ["FAKE_STEP"])
os.makedirs(checkpoints, exist_ok=True)
start = max([int(d) for d in os.listdir(checkpoints)] or [0])
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
  for step in range(start + 1, stop + 1):
    f.write(json.dumps({"step": step, "train/loss": 1 / step,
                        "eval/retrieval/text_to_image/r@1": step / 100}) + "\\n")
os.makedirs(os.path.join(checkpoints, str(stop), sys.argv[-1]))
"""


def _fake_task(tmp_path):
  """FAKE_SWEEP's task with FAKE_MAIN for main.py: (sweep, task, the runlocal config's
  total_steps)."""
  from mmjax.train import init_from  # pylint: disable=g-import-not-at-top
  (tmp_path / "fake_sweep.py").write_text(FAKE_SWEEP)
  (tmp_path / "fake_main.py").write_text(FAKE_MAIN)
  sweep = sweep_lib.load_sweep(str(tmp_path / "fake_sweep.py"))
  (task,) = sweep_lib.tasks(sweep, tmp_path / "sweep", runlocal=True)
  task.stages = {stage: [sys.executable, str(tmp_path / "fake_main.py"),
                         f"--workdir={os.path.join(task.folder, stage)}", init_from.STATE_ITEM]
                 for stage in task.stages}
  total = sweep_lib.load_config("configs/pretrain_digits.py:runlocal").total_steps
  return sweep, task, total


def test_a_stage_stopped_early_is_not_done_and_resumes(tmp_path, monkeypatch):
  """main.py exits 0 when a SIGTERM stops it at step 6 of 10: the local runner stops there,
  marks nothing done, starts no later stage and writes no result; the next invocation resumes
  the stage, and the result holds what each stage logged at step 10, and the seconds of all
  three stage runs (a clock here that moves 5 s per reading)."""
  sweep, task, total = _fake_task(tmp_path)
  clock = iter(range(0, 10**6, 5))
  monkeypatch.setattr(sweep_lib.runner, "time", types.SimpleNamespace(time=lambda: next(clock)))
  monkeypatch.setenv("FAKE_STEP", "6")
  with pytest.raises(UserError, match=f"stopped at step 6 of {total}"):
    sweep_lib.run_local(sweep, [task], log=lambda _: None)
  assert not os.path.exists(os.path.join(task.folder, "pretrain", "done"))
  assert not os.path.exists(os.path.join(task.folder, "probe")) and not task.done
  state = json.loads((pathlib.Path(task.folder) / "task.json").read_text())
  assert state == {"config_hash": task.config_hash, "seconds": 5, "invocations": 1}

  monkeypatch.setenv("FAKE_STEP", str(total))
  sweep_lib.run_local(sweep, [task], log=lambda _: None)
  assert task.done
  result = json.loads((pathlib.Path(task.folder) / "result.json").read_text())
  assert result["metrics"] == {"pretrain/eval/retrieval/text_to_image/r@1": total / 100,
                               "probe/train/loss": 1 / total}
  assert result["seconds"] == 15 and result["config_hash"] == task.config_hash
  assert result["commit"] == provenance.commit() and result["dirty"] in (True, False)


# Waits for SIGTERM (at most 60 s), then records that it got it and exits 0, as main.py saves
# and stops.
WAITING_MAIN = """\
import os, signal, sys, time
workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
os.makedirs(workdir, exist_ok=True)
got = []
signal.signal(signal.SIGTERM, lambda *_: got.append(True))
open(os.path.join(workdir, "running"), "w").close()
for _ in range(6000):
  if got:
    open(os.path.join(workdir, "got_sigterm"), "w").close()
    break
  time.sleep(0.01)
"""


def test_a_sigterm_to_the_runner_is_passed_on_to_main_py(tmp_path):
  """The runner alone gets SIGTERM (a scheduler, `timeout`): it passes it on to the stage's
  main.py, waits for it to stop, and stops itself, marking nothing done."""
  sweep, task, _ = _fake_task(tmp_path)
  (tmp_path / "waiting_main.py").write_text(WAITING_MAIN)
  workdir = os.path.join(task.folder, "pretrain")
  task.stages["pretrain"][1] = str(tmp_path / "waiting_main.py")

  def notice():
    for _ in range(6000):  # A guard against waiting forever (60 s), not a speed check.
      if os.path.exists(os.path.join(workdir, "running")):
        os.kill(os.getpid(), signal.SIGTERM)  # To this process: the runner.
        return
      time.sleep(0.01)

  threading.Thread(target=notice, daemon=True).start()
  with pytest.raises(UserError, match="stopped by SIGTERM, passed on to pretrain"):
    sweep_lib.run_local(sweep, [task], log=lambda _: None)
  assert os.path.exists(os.path.join(workdir, "got_sigterm"))
  assert not os.path.exists(os.path.join(workdir, "done")) and not task.done


def test_path_flags_expand_home_and_variables(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("MMJAX_TEST_DIR", str(tmp_path))
  (tmp_path / "fake_sweep.py").write_text(FAKE_SWEEP)
  assert sweep_lib.main(["--sweep=$MMJAX_TEST_DIR/fake_sweep.py",
                         "--workdir=$MMJAX_TEST_DIR/sweep", "--runlocal",
                         "--launcher=print"]) == 0, capsys.readouterr().err
  assert f"--workdir={tmp_path / 'sweep'}/" in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path)) == ["fake_sweep.py", "sweep"]


def test_a_stage_an_older_runner_marked_done_early_is_refused(tmp_path, monkeypatch, capsys):
  """A workdir where an older runner marked a preempted stage done and wrote the task's result
  from it: the runner says so rather than report that result or start later stages from it."""
  sweep, task, total = _fake_task(tmp_path)
  monkeypatch.setenv("FAKE_STEP", "6")
  subprocess.run(task.stages["pretrain"], check=True)
  open(os.path.join(task.folder, "pretrain", "done"), "w", encoding="utf-8").close()
  (pathlib.Path(task.folder) / "result.json").write_text(json.dumps(dict(
      point="runlocal", overrides=task.overrides, seed=0, commit="c", seconds=1.0,
      metrics={m: 0.06 for m in sweep.metrics})))
  argv = [f"--sweep={tmp_path / 'fake_sweep.py'}", f"--workdir={tmp_path / 'sweep'}",
          "--runlocal", "--collect"]
  assert sweep_lib.main(argv) == 2
  assert f"marked done, but trained to step 6, not its total_steps {total}" in \
      capsys.readouterr().err


def test_result_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
  """A runner that fails while writing result.json (here a disk full half-way) leaves no file
  behind, and a half-written one (an older runner killed mid-write) is not done either."""
  sweep, task, total = _fake_task(tmp_path)
  monkeypatch.setenv("FAKE_STEP", str(total))
  for stage, cmd in task.stages.items():
    subprocess.run(cmd, check=True)
    open(os.path.join(task.folder, stage, "done"), "w", encoding="utf-8").close()

  def half_then_disk_full(record, f, **kwargs):
    f.write(json.dumps(record, **kwargs)[:40])
    f.flush()
    raise OSError(28, "No space left on device")

  with monkeypatch.context() as patch:
    patch.setattr(json, "dump", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
      sweep_lib.finish(sweep, task)
  assert sorted(os.listdir(task.folder)) == ["pretrain", "probe"] and not task.done
  (pathlib.Path(task.folder) / "result.json").write_text('{"point": "runlocal", "seed": 0, "me')
  assert not task.done
  sweep_lib.finish(sweep, task)
  assert task.done


def test_slurm_marks_a_stage_done_only_at_its_total_steps(tmp_path):
  """The SLURM script applies the same rule: a pretraining stopped at step 6 (exit 0) fails
  the array task and the probe does not start; the resubmitted task resumes and ends both."""
  _, task, total = _fake_task(tmp_path)
  script = sweep_lib.slurm_script(str(tmp_path / "fake_sweep.py"), str(tmp_path / "sweep"),
                                  [task], argparse.Namespace(sbatch=[], runlocal=True))
  script = re.sub(r"^.*--collect.*$", "", script, flags=re.M)  # Collecting is tested above.
  (tmp_path / "job.sh").write_text(script)
  run = lambda step: subprocess.run(
      ["bash", str(tmp_path / "job.sh")], capture_output=True, text=True, check=False,
      env={**os.environ, "SLURM_ARRAY_TASK_ID": "0", "FAKE_STEP": str(step)})

  out = run(6)
  assert not os.path.exists(os.path.join(task.folder, "pretrain", "done"))
  assert not os.path.exists(os.path.join(task.folder, "probe"))
  assert out.returncode != 0 and f"stopped at step 6 of {total}" in out.stderr, out
  out = run(total)
  assert out.returncode == 0, out.stdout + out.stderr
  assert all(os.path.exists(os.path.join(task.folder, s, "done")) for s in task.stages)
  # Each main.py run timed, the stopped one too.
  state = json.loads((pathlib.Path(task.folder) / "task.json").read_text())
  assert state["invocations"] == 3 and state["config_hash"] == task.config_hash


TEST_SWEEP = """\
r'''The demo's runlocal config, one seed.'''
from mmjax.sweep import LABEL, Sweep

def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py",
      points=[{LABEL: "runlocal"}],
      x=LABEL, seeds=(0,),
      metrics=("pretrain/eval/retrieval/text_to_image/r@1", "pretrain/train/loss"))
"""


def _training_pid(workdir):
  """The pid of the main.py that holds `workdir` once it trains (its preemption watcher catches
  SIGTERM, /proc/PID/status SigCgt; before that a SIGTERM would kill it outright), else None."""
  try:
    pid = json.loads((workdir / "lock.json").read_text())["pid"]
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
  except (OSError, ValueError, KeyError):  # Not started, half written, or gone.
    return None
  caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
  return pid if caught >> (signal.SIGTERM - 1) & 1 else None


@pytest.mark.slow  # End-to-end training.
def test_sweep_runs_resumes_and_reports(tmp_path, data_dir):
  """The runner, its task's main.py SIGTERMed (a preemption: main.py saves and exits 0)
  half-way: the runner stops, the stage is not done and has no result. Run again: it resumes
  from its checkpoint, and the result holds each metric's value at the final step; the run
  (the plain runlocal config at seed 0, resumed) matches
  configs/reference/pretrain_digits_runlocal.json. A third invocation trains nothing."""
  sweep_file = tmp_path / "one_point.py"
  sweep_file.write_text(TEST_SWEEP)
  workdir = tmp_path / "sweep"
  args = [sys.executable, "-m", "mmjax.sweep", f"--sweep={sweep_file}", f"--workdir={workdir}",
          "--runlocal", f"--set=data.dir={data_dir}"]
  total = sweep_lib.load_config("configs/pretrain_digits.py:runlocal").total_steps
  task = workdir / "runlocal" / "seed0"
  proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  pid = None
  while pid is None and proc.poll() is None:
    pid = _training_pid(task / "pretrain")
    time.sleep(0.01)
  if pid is not None:
    os.kill(pid, signal.SIGTERM)
  output, _ = proc.communicate(timeout=600)
  assert pid is not None, output[-3000:]
  assert not (task / "pretrain" / "done").exists(), output[-3000:]
  stopped = max(int(d) for d in os.listdir(task / "pretrain" / "checkpoints") if d.isdigit())
  assert 1 <= stopped < total
  assert proc.returncode == 2 and f"stopped at step {stopped} of {total}" in output, output
  assert not (task / "result.json").exists()

  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  assert re.search(rf"Resumed from \S+ at step {stopped}\.", out.stderr), out.stderr[-3000:]
  records = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert [(r["point"], r["seed"]) for r in records] == [("runlocal", 0)]
  logged = (task / "pretrain" / "metrics.jsonl").read_text().splitlines()
  final = {k: v for row in map(json.loads, logged) if row["step"] == total
           for k, v in row.items()}
  assert records[0]["metrics"] == {f"pretrain/{m}": final[m]
                                   for m in ("eval/retrieval/text_to_image/r@1", "train/loss")}
  table = (workdir / "results.md").read_text()
  assert re.search(r"^\| runlocal \| 1 \| 0\.\d{3}", table, re.M), table
  assert (workdir / "results.png").read_bytes()[:4] == b"\x89PNG"
  stamp = (task / "pretrain" / "metrics.jsonl").stat().st_mtime_ns
  again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
  assert again.returncode == 0 and "1 of 1 point x seed runs already done" in again.stdout
  assert (task / "pretrain" / "metrics.jsonl").stat().st_mtime_ns == stamp

  # The plain runlocal point, resumed, against the checked-in reference curve.
  reference = json.loads(REFERENCE.read_text())
  rows = sweep_lib.compare(str(task / "pretrain"), reference)
  assert rows and all(ok for *_, ok in rows), [r for r in rows if not r[-1]]
