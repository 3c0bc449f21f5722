"""Running a sweep: its point x seed tasks (and baseline x seed: the downstream stages alone,
from random init) and their main.py commands, running them locally stage by stage (skipping
what is done, so a second invocation resumes), a SLURM array script of the same commands, each
task's result.json, and adopting a committed report's points whose config still matches.

A stage is done when its workdir trained to the stage's total_steps: its latest complete
checkpoint (the one a resume, or the next stage's init_from, starts from) is that step. Its exit
status alone does not say so: main.py exits 0 when a SIGTERM (a preemption) stops it early.
Both launchers mark a stage done (WORKDIR/<stage>/done) by that rule alone (`mark_done`), and
a task's metrics are the values its stages logged at their final step.

Each task folder keeps task.json: the hash of the task's resolved stage configs (a folder whose
stages ran with another config is refused, not mixed in) and the seconds its stage invocations
took, all of them (a task resumed after a preemption reports the time of every run)."""
import dataclasses
import glob
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

from mmjax import provenance
from mmjax.errors import UserError
from mmjax.paths import atomic_open
from mmjax.sweep.spec import (PRETRAIN, REPO, config_hash, entries, folder_name, stage_config,
                              stage_configs)

DONE = "done"  # WORKDIR/<point>/seed<k>/<stage>/done: the stage trained to its total_steps.
RESULT = "result.json"  # WORKDIR/<point>/seed<k>/result.json: the task's record.
TASK = "task.json"  # WORKDIR/<point>/seed<k>/task.json: its config hash and seconds so far.
# Changes there do not make a result's tree dirty: the runner itself rewrites its report (in
# docs/ablations/ by convention) after each point, and documentation changes no run.
DIRTY_IGNORED = ("docs/",)
# The train state's item in a checkpoint step directory: mmjax.train.init_from.STATE_ITEM, which
# is not imported here because it loads JAX, and the SLURM script asks `stage-done` per stage.
STATE_ITEM = "state"


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


def _write_json(path, record):
  """Writes `record` to `path` whole or not at all (a runner killed meanwhile, or a full disk,
  leaves no half file)."""
  with atomic_open(path) as f:
    json.dump(record, f, indent=1)


def _read_json(path):
  """The JSON in `path`, or None if it is missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@dataclasses.dataclass
class Task:
  """One point (or baseline) x seed: its stages' commands, in order, the step each stage
  trains to, and the hash of its resolved stage configs (spec.config_hash)."""
  overrides: dict
  seed: int
  folder: str
  stages: dict  # {stage: command}
  total_steps: dict  # {stage: the config's total_steps}
  point: str = ""  # spec.point_name, or 'baseline:<name>'.
  config_hash: str = ""
  baseline: str = ""  # The baseline's name, or '' for a point.

  @property
  def done(self):
    """Whether result.json holds this task's record (written whole, by finish or
    adopt_reported; a half-written one from an older runner is not done)."""
    record = _read_json(os.path.join(self.folder, RESULT))
    return (isinstance(record, dict) and record.get("point") == self.point
            and record.get("seed") == self.seed and isinstance(record.get("metrics"), dict))


def tasks(sweep, workdir, runlocal=False, extra=None):
  """The point x seed tasks, then the baseline x seed ones (no pretraining: their downstream
  stages start from random init)."""
  out = []
  for name, overrides, baseline in entries(sweep):
    for seed in sweep.seeds:
      folder = os.path.join(os.path.abspath(workdir), folder_name(name), f"seed{seed}")
      stages, total_steps, configs = {}, {}, {}
      for stage, (spec, stage_overrides) in stage_configs(
          sweep, overrides, seed, extra, bool(baseline)).items():
        configs[stage] = stage_config(spec, stage_overrides, runlocal, folder)
        total_steps[stage] = configs[stage].total_steps
        if stage != PRETRAIN and not baseline:
          stage_overrides = {**stage_overrides, "init_from": os.path.join(folder, PRETRAIN)}
        stages[stage] = command(spec, os.path.join(folder, stage), stage_overrides, runlocal)
      out.append(Task(overrides, seed, folder, stages, total_steps, name,
                      config_hash(configs), baseline))
  return out


def add_seconds(folder, seconds, config_hash=None):
  """Adds one stage invocation's seconds to the task's running total in FOLDER/task.json
  (creating it, with the task's config hash, if it is missing)."""
  state = _read_json(os.path.join(folder, TASK)) or {}
  state = {"config_hash": state.get("config_hash") or config_hash,
           "seconds": round(state.get("seconds", 0.0) + seconds, 1),
           "invocations": state.get("invocations", 0) + 1}
  _write_json(os.path.join(folder, TASK), state)


def trained_to(workdir):
  """The step of WORKDIR's latest complete checkpoint, or None: the step a resume, and a
  downstream stage's init_from, start from (the rule of mmjax.train.init_from.step_dir). Orbax
  writes a step under a temporary name and renames it to the bare number once complete."""
  root = os.path.join(workdir, "checkpoints")
  names = os.listdir(root) if os.path.isdir(root) else ()
  return max((int(d) for d in names
              if d.isdigit() and os.path.isdir(os.path.join(root, d, STATE_ITEM))), default=None)


def stage_done(workdir, total_steps):
  """Whether the stage in `workdir` is marked done and trained to `total_steps` (a marker an
  older runner left on a preempted stage does not count)."""
  return os.path.exists(os.path.join(workdir, DONE)) and trained_to(workdir) == total_steps


def mark_done(workdir, total_steps):
  """Marks the stage in `workdir` done after its main.py exited 0, if it trained to
  `total_steps`; else UserError (a preempted run also exits 0)."""
  step = trained_to(workdir)
  if step != total_steps:
    where = "no checkpoint" if step is None else f"step {step}"
    raise UserError(f"sweep: {workdir} stopped at {where} of {total_steps} (preempted?), so it "
                    "is not done; run the same command again to resume it.")
  open(os.path.join(workdir, DONE), "w", encoding="utf-8").close()


def check_marked(all_tasks):
  """UserError if a stage is marked done short of its total_steps: an older runner counted a
  preempted stage as done (or the sweep's total_steps changed since), so the task's result, and
  any later stage started from that stage's checkpoint, come from a partial run. Likewise if
  the task's stages ran (task.json) or its result was written (result.json) with another
  config than the sweep now gives it: its stages would be skipped as done."""
  for task in all_tasks:
    for path in (TASK, RESULT):
      ran = (_read_json(os.path.join(task.folder, path)) or {}).get("config_hash")
      if ran and ran != task.config_hash:
        raise UserError(
            f"sweep: {task.point} seed {task.seed}: its config changed since {task.folder} ran "
            f"it ({path}: config hash {ran}, now {task.config_hash}); move that folder away "
            "to run it again.")
    for stage in task.stages:
      workdir = os.path.join(task.folder, stage)
      if os.path.exists(os.path.join(workdir, DONE)) and not stage_done(
          workdir, task.total_steps[stage]):
        raise UserError(
            f"sweep: {workdir} is marked done, but trained to step {trained_to(workdir)}, not "
            f"its total_steps {task.total_steps[stage]}; its result and later stages come "
            f"from that partial run. Move {task.folder} away to run it again.")


def value_at(workdir, key, step=None):
  """`key`'s value logged at step `step` (None: at any step) in WORKDIR/metrics.jsonl, or None.
  The last such record: a relaunch after the final checkpoint evaluates (and logs) that step
  again."""
  value = None
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        record = json.loads(line)
        if key in record and step in (None, record.get("step")):
          value = record[key]
  return value


def last_value(workdir, key):
  """The last value of `key` in WORKDIR/metrics.jsonl, or None."""
  return value_at(workdir, key)


def finish(sweep, task):
  """Writes the task's result.json (atomically) from the metrics its stages logged at their
  final step (all stages must be done; a baseline's record has only the downstream metrics):
  point, overrides, seed, config hash, commit, whether the tree was dirty, the seconds of
  every stage invocation (None if none was timed), metrics."""
  metrics = {}
  for metric in (*sweep.metrics, *itertools.chain(*sweep.mean_of.values())):
    stage, _, key = metric.partition("/")
    if stage in task.stages:
      metrics[metric] = value_at(os.path.join(task.folder, stage), key, task.total_steps[stage])
  missing = [m for m, v in metrics.items() if v is None]
  if missing:
    raise UserError(f"{task.folder}: its stages trained to {task.total_steps} steps, but their "
                    f"metrics.jsonl lack {missing} at that step.")
  record = dict(point=task.point, overrides=task.overrides, seed=task.seed,
                config_hash=task.config_hash, commit=provenance.commit(),
                dirty=provenance.dirty(ignore=DIRTY_IGNORED),
                seconds=(_read_json(os.path.join(task.folder, TASK)) or {}).get("seconds"),
                metrics=metrics)
  if task.baseline:
    record["baseline"] = task.baseline
  _write_json(os.path.join(task.folder, RESULT), record)


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
    if not os.path.exists(os.path.join(task.folder, TASK)):  # Its config, before any stage runs.
      _write_json(os.path.join(task.folder, TASK),
                  {"config_hash": task.config_hash, "seconds": 0.0, "invocations": 0})
    for stage, cmd in task.stages.items():
      workdir = os.path.join(task.folder, stage)
      if stage_done(workdir, task.total_steps[stage]):
        continue
      log(f"sweep: run {len(all_tasks) - len(todo) + i + 1}/{len(all_tasks)}: "
          f"{task.point} seed {task.seed}, {stage}{eta}\n  "
          + " ".join(map(shlex.quote, cmd)))
      stage_start = time.time()
      status, stopped_by = _run_stage(cmd)
      add_seconds(task.folder, time.time() - stage_start, task.config_hash)
      if stopped_by:
        raise UserError(f"sweep: stopped by {stopped_by}, passed on to {stage} of "
                        f"{task.folder} (exit {status}: it saves at its next step); run the "
                        "same command again to resume.")
      if status:
        raise UserError(f"sweep: {stage} of {task.folder} failed (exit {status}); "
                        "fix it and run the same command again to resume.")
      mark_done(workdir, task.total_steps[stage])
    spent.append(time.time() - start)
    finish(sweep, task)
    on_done()


def _run_stage(cmd):
  """Runs one stage's main.py -> (exit status, the signal that stopped the runner or None).

  A SIGTERM or Ctrl-C to the runner is passed on to main.py as SIGTERM (save at the next step,
  exit), and the runner waits for it: main.py is neither killed in the middle of a save (as
  subprocess.run does on Ctrl-C) nor left running alone in its workdir. (A Ctrl-C at the
  terminal reaches main.py itself too; the SIGTERM after it changes nothing, and a second
  Ctrl-C still stops main.py at once.)"""
  proc = subprocess.Popen(cmd, cwd=REPO)
  stopped_by = []

  def pass_on(signum, frame):
    del frame
    stopped_by.append("Ctrl-C" if signum == signal.SIGINT else "SIGTERM")
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, pass_on) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    status = proc.wait()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  return status, (stopped_by[0] if stopped_by else None)


def _duration(seconds):
  return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def slurm_script(sweep_path, workdir, all_tasks, args):
  """An sbatch array script: task i runs point x seed i's stages (the same main.py commands),
  skipping and marking stages done by the local runner's rule (`stage-done`), then collects.
  Any failure, or a stage that stopped early (exit 0 on a preemption), ends the task there;
  `stage-done --mark` adds each main.py's seconds to the task's total first, whatever its
  exit status."""
  lines = ["#!/bin/bash", f"#SBATCH --job-name=mmjax-sweep-{os.path.basename(workdir)}",
           f"#SBATCH --array=0-{len(all_tasks) - 1}",
           f"#SBATCH --output={os.path.abspath(workdir)}/slurm-%A_%a.out"]
  lines += [f"#SBATCH {opt}" for opt in args.sbatch]
  lines += ["set -euo pipefail", f"cd {shlex.quote(REPO)}", 'case "$SLURM_ARRAY_TASK_ID" in']
  for i, task in enumerate(all_tasks):
    lines.append(f"  {i})")
    lines.append(f"    mkdir -p {shlex.quote(task.folder)}")
    for stage, cmd in task.stages.items():
      # `check || { main.py || rc=$?; mark; }`: the mark step times main.py and ends the task
      # (under `set -e`) if main.py failed or stopped early.
      check = " ".join(map(shlex.quote, [
          sys.executable, "-m", "mmjax.sweep", "stage-done", os.path.join(task.folder, stage),
          f"--total-steps={task.total_steps[stage]}"]))
      lines.append(f"    {check} || {{ s=$SECONDS; rc=0; {' '.join(map(shlex.quote, cmd))} || "
                   f"rc=$?; {check} --mark --seconds=$((SECONDS - s)) --status=$rc "
                   f"--config-hash={task.config_hash}; }}")
    lines.append("    ;;")
  lines.append("esac")
  collect = [sys.executable, "-m", "mmjax.sweep", f"--sweep={sweep_path}",
             f"--workdir={workdir}", "--collect"] + (["--runlocal"] if args.runlocal else [])
  lines.append(" ".join(map(shlex.quote, collect)) + " || true  # Tables from what is done.")
  return "\n".join(lines) + "\n"


def _records(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def adopt_reported(all_tasks, report, log=print):
  """Marks the tasks that REPORT.jsonl (a committed report, e.g. from an earlier session on
  another machine) already holds as done, writing their result.json from it: a sweep resumes
  from what was committed even when its workdir is gone. A record is adopted only if its
  config hash is the task's (its point and seed ran with the config the sweep now gives them);
  for one that is not (or has no hash: an older runner), `log` says the task runs again.

  A task that REPORT.jsonl lacks is then looked up by its config hash in the other reports
  beside it (e.g. docs/ablations/*.jsonl): the same resolved configs are the same run, so the
  baselines and points that sweeps share run once. Such a record keeps the other report's
  name in `adopted_from`, and `log` says which tasks came from where.
  Returns how many it adopted."""
  path = report + ".jsonl"
  records = ({(r["point"], r["seed"]): r for r in _records(path)}
             if os.path.exists(path) else {})
  adopted = 0

  def adopt(task, record):
    nonlocal adopted
    os.makedirs(task.folder, exist_ok=True)
    _write_json(os.path.join(task.folder, RESULT), record)
    adopted += 1

  for task in all_tasks:
    record = records.get((task.point, task.seed))
    if record is None or task.done:
      continue
    if record.get("config_hash") != task.config_hash:
      why = (f"its config changed since (hash {record['config_hash']}, now {task.config_hash})"
             if record.get("config_hash") else "it has no config hash (an older runner)")
      log(f"sweep: {path} holds {task.point} seed {task.seed}, but {why}: running it again.")
      continue
    adopt(task, record)
  folder = os.path.dirname(os.path.abspath(path))
  others = sorted(glob.glob(os.path.join(folder, "*.jsonl")))
  by_hash = {}
  for other in others:
    if os.path.abspath(other) != os.path.abspath(path):
      for record in _records(other):
        if record.get("config_hash"):
          by_hash.setdefault(record["config_hash"], (other, record))
  for task in all_tasks:
    if task.done or task.config_hash not in by_hash:
      continue
    other, record = by_hash[task.config_hash]
    source = record.get("adopted_from") or os.path.basename(other)
    adopt(task, {**record, "point": task.point, "overrides": task.overrides,
                 "adopted_from": source})
    log(f"sweep: {task.point} seed {task.seed} ran with the same configs in {other}: "
        "taken from there.")
  return adopted
