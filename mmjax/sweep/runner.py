"""Running a sweep: its point x seed tasks and their main.py commands, running them locally
stage by stage (skipping what is done, so a second invocation resumes), a SLURM array script
of the same commands, each task's result.json, and adopting a committed report's points."""
import dataclasses
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from mmjax import provenance
from mmjax.errors import UserError
from mmjax.sweep.spec import PRETRAIN, REPO, point_name, stage_configs


def _flag_value(value):
  return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def command(spec, workdir, overrides, runlocal=False):
  """The main.py command line of one stage."""
  if runlocal:
    path, _, arg = spec.partition(":")
    spec = f"{path}:{','.join(filter(None, [arg, 'runlocal']))}"
  return [sys.executable, os.path.join(REPO, "main.py"), f"--config={spec}",
          f"--workdir={workdir}"] + [f"--config.{k}={_flag_value(v)}"
                                     for k, v in overrides.items()]


@dataclasses.dataclass
class Task:
  """One point x seed: its stages' commands, in order."""
  overrides: dict
  seed: int
  folder: str
  stages: dict  # {stage: command}

  @property
  def done(self):
    return os.path.exists(os.path.join(self.folder, "result.json"))


def tasks(sweep, workdir, runlocal=False, extra=None):
  out = []
  for overrides in sweep.points:
    for seed in sweep.seeds:
      folder = os.path.join(os.path.abspath(workdir),
                            re.sub(r"[^\w.=,+-]", "_", point_name(overrides)), f"seed{seed}")
      stages = {}
      for stage, (spec, stage_overrides) in stage_configs(
          sweep, overrides, seed, extra).items():
        if stage != PRETRAIN:
          stage_overrides = {**stage_overrides, "init_from": os.path.join(folder, PRETRAIN)}
        stages[stage] = command(spec, os.path.join(folder, stage), stage_overrides, runlocal)
      out.append(Task(overrides, seed, folder, stages))
  return out


def last_value(workdir, key):
  """The last value of `key` in WORKDIR/metrics.jsonl, or None."""
  value = None
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        record = json.loads(line)
        if key in record:
          value = record[key]
  return value


def finish(sweep, task, seconds=None):
  """Writes the task's result.json from its stages' metrics (all stages must be done)."""
  metrics = {}
  for metric in (*sweep.metrics, *itertools.chain(*sweep.mean_of.values())):
    stage, _, key = metric.partition("/")
    metrics[metric] = last_value(os.path.join(task.folder, stage), key)
  missing = [m for m, v in metrics.items() if v is None]
  if missing:
    raise UserError(f"{task.folder}: finished, but its metrics.jsonl lack {missing}.")
  record = dict(point=point_name(task.overrides), overrides=task.overrides, seed=task.seed,
                commit=provenance.commit(), seconds=seconds, metrics=metrics)
  with open(os.path.join(task.folder, "result.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)


def run_local(sweep, all_tasks, log=print, on_done=lambda: None):
  """Runs every unfinished task, stage by stage, skipping finished stages; calls on_done()
  after each task (the results files then cover every finished point)."""
  todo = [t for t in all_tasks if not t.done]
  log(f"sweep: {len(all_tasks) - len(todo)} of {len(all_tasks)} point x seed runs already "
      f"done; {len(todo)} to run.")
  spent = []
  for i, task in enumerate(todo):
    eta = (f", ETA {_duration(statistics.mean(spent) * (len(todo) - i))}" if spent else "")
    start = time.time()
    os.makedirs(task.folder, exist_ok=True)
    for stage, cmd in task.stages.items():
      marker = os.path.join(task.folder, stage, "done")
      if os.path.exists(marker):
        continue
      log(f"sweep: run {len(all_tasks) - len(todo) + i + 1}/{len(all_tasks)}: "
          f"{point_name(task.overrides)} seed {task.seed}, {stage}{eta}\n  "
          + " ".join(map(shlex.quote, cmd)))
      result = subprocess.run(cmd, cwd=REPO, check=False)
      if result.returncode:
        raise UserError(f"sweep: {stage} of {task.folder} failed (exit {result.returncode}); "
                        "fix it and run the same command again to resume.")
      open(marker, "w", encoding="utf-8").close()
    spent.append(time.time() - start)
    finish(sweep, task, seconds=round(spent[-1], 1))
    on_done()


def _duration(seconds):
  return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def slurm_script(sweep_path, workdir, all_tasks, args):
  """An sbatch array script: task i runs point x seed i's stages (the same main.py commands),
  marking each stage done, then collects."""
  lines = ["#!/bin/bash", f"#SBATCH --job-name=mmjax-sweep-{os.path.basename(workdir)}",
           f"#SBATCH --array=0-{len(all_tasks) - 1}",
           f"#SBATCH --output={os.path.abspath(workdir)}/slurm-%A_%a.out"]
  lines += [f"#SBATCH {opt}" for opt in args.sbatch]
  lines += ["set -euo pipefail", f"cd {shlex.quote(REPO)}", 'case "$SLURM_ARRAY_TASK_ID" in']
  for i, task in enumerate(all_tasks):
    lines.append(f"  {i})")
    lines.append(f"    mkdir -p {shlex.quote(task.folder)}")
    for stage, cmd in task.stages.items():
      marker = shlex.quote(os.path.join(task.folder, stage, "done"))
      lines.append(f"    [ -e {marker} ] || {{ {' '.join(map(shlex.quote, cmd))} && "
                   f"touch {marker}; }}")
    lines.append("    ;;")
  lines.append("esac")
  collect = [sys.executable, "-m", "mmjax.sweep", f"--sweep={sweep_path}",
             f"--workdir={workdir}", "--collect"] + (["--runlocal"] if args.runlocal else [])
  lines.append(" ".join(map(shlex.quote, collect)) + " || true  # Tables from what is done.")
  return "\n".join(lines) + "\n"


def adopt_reported(all_tasks, report):
  """Marks the tasks that REPORT.jsonl (a committed report, e.g. from an earlier session on
  another machine) already holds as done, writing their result.json from it: a sweep resumes
  from what was committed even when its workdir is gone. Returns how many it adopted."""
  path = report + ".jsonl"
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    records = {(r["point"], r["seed"]): r for r in map(json.loads, f)}
  adopted = 0
  for task in all_tasks:
    record = records.get((point_name(task.overrides), task.seed))
    if record is not None and not task.done:
      os.makedirs(task.folder, exist_ok=True)
      with open(os.path.join(task.folder, "result.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
      adopted += 1
  return adopted
