"""Sweeps (mmjax/sweep/): every shipped sweep file is valid without training; bad ones get one
clear message; SLURM gets an array script; a two-point sweep runs end to end through the runner,
resumes without rerunning a finished point, and its plain runlocal point matches the checked-in
reference curve."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mmjax import sweep as sweep_lib
from mmjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs" / "ablations").glob("*.py"))
REFERENCE = REPO / "configs" / "reference" / "pretrain_digits_runlocal.json"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_sweep_file_is_valid(path):
  """Loads; every override key exists; every point's stages pass the config checks; every
  metric comes from a stage and an evaluator (or objective) that stage runs; the docstring
  names the paper's result and the command."""
  sweep = sweep_lib.load_sweep(str(path))
  sweep_lib.check(sweep, str(path))
  doc = (sweep_lib.spec._module(str(path), "doc").__doc__ or "")  # pylint: disable=protected-access
  assert "Reproduces" in doc
  assert f"--sweep=configs/ablations/{path.name}" in doc
  assert len(sweep.seeds) >= 2


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
  path = "configs/ablations/mae_mask_ratio.py"
  assert sweep_lib.main([f"--sweep={path}", f"--workdir={tmp_path}", "--launcher=slurm"]) == 0
  script = (tmp_path / "sweep.sbatch").read_text()
  sweep = sweep_lib.load_sweep(str(REPO / path))
  n = len(sweep.points) * len(sweep.seeds)
  assert f"#SBATCH --array=0-{n - 1}" in script
  branches = re.findall(r"^  (\d+)\)\n(.*?)\n    ;;", script, re.M | re.S)
  assert [int(i) for i, _ in branches] == list(range(n))
  for i, body in branches:
    point, seed = sweep.points[int(i) // len(sweep.seeds)], sweep.seeds[int(i) % len(sweep.seeds)]
    commands = re.findall(r"\S*python\S* \S*main.py .*? &&", body)
    assert len(commands) == 1 + len(sweep.downstream), body
    ratio = point["objectives.masked_image.mask_ratio"]
    assert f"--config.objectives.masked_image.mask_ratio={ratio} " in commands[0]
    assert all(f"--config.seed={seed}" in c for c in commands)
    assert all("--config.init_from=" in c for c in commands[1:])
  assert "--collect" in script
  assert f"{n} array tasks" in capsys.readouterr().out


TEST_SWEEP = """\
r'''Two points of the demo's runlocal config: as it is, and with the sigmoid loss.'''
from mmjax.sweep import LABEL, Sweep

def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py",
      points=[{LABEL: "runlocal"}, {LABEL: "siglip", "objectives.contrastive.type": "siglip"}],
      x=LABEL, seeds=(0,),
      metrics=("pretrain/eval/retrieval/text_to_image/r@1", "pretrain/train/loss"))
"""


@pytest.mark.slow  # End-to-end training.
def test_sweep_runs_resumes_and_reports(tmp_path, data_dir):
  """The runner, killed right after its first point finished, run again: the first point is
  not rerun, the second runs, and the results files cover both. The first point is the plain
  runlocal config: it matches configs/reference/pretrain_digits_runlocal.json."""
  sweep_file = tmp_path / "two_points.py"
  sweep_file.write_text(TEST_SWEEP)
  workdir = tmp_path / "sweep"
  args = [sys.executable, "-m", "mmjax.sweep", f"--sweep={sweep_file}", f"--workdir={workdir}",
          "--runlocal", f"--set=data.dir={data_dir}"]
  first = workdir / "runlocal" / "seed0"
  proc = subprocess.Popen(args, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  while not (first / "result.json").exists() and proc.poll() is None:
    time.sleep(0.2)
  os.killpg(proc.pid, signal.SIGKILL)  # The runner and the second point's main.py.
  proc.wait()
  assert (first / "result.json").exists(), proc.stdout.read()
  stamp = (first / "pretrain" / "metrics.jsonl").stat().st_mtime_ns

  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "1 of 2 point x seed runs already done" in out.stdout
  assert (first / "pretrain" / "metrics.jsonl").stat().st_mtime_ns == stamp
  records = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
  assert [r["point"] for r in records] == ["runlocal", "siglip"]
  for r, name in zip(records, ["runlocal", "siglip"]):  # Each the last value its run logged.
    logged = [json.loads(line) for line in
              (workdir / name / "seed0" / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    for metric in ("eval/retrieval/text_to_image/r@1", "train/loss"):
      assert r["metrics"][f"pretrain/{metric}"] == [x[metric] for x in logged if metric in x][-1]
  table = (workdir / "results.md").read_text()
  assert re.search(r"^\| runlocal \|.*\| 1 \| 0\.\d{3} ± 0\.000 \|", table, re.M), table
  assert re.search(r"^\| siglip \| siglip \| 1 \|", table, re.M), table
  assert (workdir / "results.png").read_bytes()[:4] == b"\x89PNG"

  # The plain runlocal point against the checked-in reference curve.
  reference = json.loads(REFERENCE.read_text())
  rows = sweep_lib.compare(str(first / "pretrain"), reference)
  assert rows and all(ok for *_, ok in rows), [r for r in rows if not r[-1]]


def test_committed_report_marks_its_points_done(tmp_path):
  """A sweep committed half-way (REPORT.jsonl) resumes elsewhere: the points it holds are done,
  the table covers them, and only the others are left to run."""
  sweep = sweep_lib.load_sweep(str(REPO / "configs" / "ablations" / "audio_mask_ratio.py"))
  report = str(tmp_path / "docs" / "audio_mask_ratio")
  first = sweep_lib.tasks(sweep, tmp_path / "a")
  metric = sweep.metrics[0]
  records = [dict(point=sweep_lib.point_name(t.overrides), overrides=t.overrides, seed=t.seed,
                  commit="c", seconds=1.0, metrics={metric: 0.5 + 0.1 * i})
             for i, t in enumerate(first[:3])]
  os.makedirs(os.path.dirname(report))
  with open(report + ".jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)

  fresh = sweep_lib.tasks(sweep, tmp_path / "b")  # Another machine: an empty workdir.
  assert sweep_lib.adopt_reported(fresh, report) == 3
  assert [t.done for t in fresh] == [True] * 3 + [False] * (len(fresh) - 3)
  assert len(sweep_lib.collect(sweep, fresh, tmp_path / "b", report)) == 3
  table = open(report + ".md", encoding="utf-8").read()
  assert "3 of 8 point x seed runs done, at commit `c`" in table
  assert re.search(r"^\| 0\.5 \| 2 \| 0\.550 ± 0\.071 \|", table, re.M), table
