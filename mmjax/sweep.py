r"""Sweeps: an ablation is a sweep file, and reproducing it is one command.

  python -m mmjax.sweep --sweep=configs/ablations/mae_mask_ratio.py \
      --workdir=workdirs/ablations/mae_mask_ratio [--launcher=local|print|slurm] [--submit]
  python -m mmjax.sweep --sweep=configs/ablations/*.py --check     # validate, train nothing
  python -m mmjax.sweep compare WORKDIR --reference=FILE     # a run against its reference curve
  python -m mmjax.sweep reference WORKDIR --out=FILE --steps=5,10 --rtol=5e-4 --atol=0.02

A sweep file (configs/ablations/<name>.py) defines `get_sweep()` returning a `Sweep`: the base
config, the points (config overrides), the seeds, the downstream stages run from each point's
pretraining (fine-tuning or a linear probe through `init_from`) and the metrics of its table.
Each point x seed gets WORKDIR/<point>/seed<k>/, with one `main.py` workdir per stage
('pretrain', then each downstream stage), a `done` marker per finished stage and `result.json`
when all are done. A second invocation skips finished points and resumes interrupted ones (each
stage resumes from its own checkpoints). WORKDIR gets `results.jsonl` (one record per point x
seed: overrides, seed, commit, seconds, metrics), `results.md` (mean ± std over seeds) and
`results.png` (each metric against the swept value, one line per series, std error bars),
rewritten after each finished point. With --report=PREFIX the same go to PREFIX.md, .png and
.jsonl (e.g. docs/ablations/<name>); a later invocation with the same --report takes the points
PREFIX.jsonl already holds as done, so a sweep committed half-way resumes on another machine.
"""
import argparse
import dataclasses
import glob
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from mmjax import provenance
from mmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = "pretrain"
LABEL = "name"  # A point's label, not a config override.


@dataclasses.dataclass(frozen=True)
class Downstream:
  """A stage run after pretraining: `config` ('path.py:arg'), with init_from set to the
  point's pretraining workdir, plus `overrides` and the point's seed."""
  config: str
  overrides: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """An ablation. Metrics are '<stage>/<metric key in that stage's metrics.jsonl>', e.g.
  'pretrain/eval/retrieval/text_to_image/r@1' or 'probe/eval/classification/accuracy'; the
  value is the stage's last. A point is a dict of overrides, plus optionally LABEL ('name'):
  its name in tables and folders, not an override. `x` is the override (or LABEL) plotted on
  the x axis; `series`, if set, the override whose values are separate lines. `overrides`
  apply to every point's pretraining first. `mean_of` adds a column: {name: [metrics]}."""
  base: str
  points: list
  metrics: tuple
  x: str
  seeds: tuple = (0, 1)
  overrides: dict = dataclasses.field(default_factory=dict)  # Every point's pretraining.
  downstream: dict = dataclasses.field(default_factory=dict)
  series: str = ""
  mean_of: dict = dataclasses.field(default_factory=dict)


def product(**values):
  """Points of every combination: product(a=(1, 2), b=(3,)) with keys given as a__b for a.b."""
  keys = [k.replace("__", ".") for k in values]
  return [dict(zip(keys, combo)) for combo in itertools.product(*values.values())]


def point_name(point):
  """A folder name for a point: its LABEL, or 'key=value,...' with each key's last two parts."""
  if LABEL in point:
    return str(point[LABEL])
  if not point:
    return "base"
  overrides = point
  return ",".join(f"{'.'.join(k.split('.')[-2:])}={v}" for k, v in overrides.items())


# -- Loading and checking. ---------------------------------------------------------------------

def _module(path, name):
  if not os.path.isfile(path):
    raise UserError(f"{path}: no such file.")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec, runlocal=False):
  """get_config(arg) of 'configs/x.py:arg' (paths relative to the repository), with
  'runlocal' added to the argument when asked."""
  path, _, arg = spec.partition(":")
  if runlocal:
    arg = ",".join(filter(None, [arg, "runlocal"]))
  module = _module(path if os.path.isabs(path) else os.path.join(REPO, path), "_sweep_config")
  return module.get_config(arg or None)


def load_sweep(path):
  module = _module(path, "_sweep_file")
  if not hasattr(module, "get_sweep"):
    raise UserError(f"{path}: a sweep file defines get_sweep() returning mmjax.sweep.Sweep.")
  return module.get_sweep()


def _set(config, key, value, where):
  node, parts = config, key.split(".")
  for part in parts[:-1]:
    if not hasattr(node, "keys") or part not in node:
      raise UserError(f"{where}: override {key!r}: the config has no key {part!r} there.")
    node = node[part]
  if not hasattr(node, "keys") or parts[-1] not in node:
    raise UserError(f"{where}: override {key!r}: the config has no key {parts[-1]!r}.")
  try:
    node[parts[-1]] = value
  except TypeError as e:  # ml_collections keeps each field's type.
    raise UserError(f"{where}: override {key}={value!r}: {e}") from None


def stage_configs(sweep, overrides, seed, extra=None):
  """{stage: (config spec, {key: value} overrides)} of one point x seed."""
  common = dict(extra or {})
  overrides = {k: v for k, v in overrides.items() if k != LABEL}
  stages = {PRETRAIN: (sweep.base, {**sweep.overrides, **overrides, "seed": seed, **common})}
  for name, down in sweep.downstream.items():
    stages[name] = (down.config, {**down.overrides, "seed": seed, **common})
  return stages


def check(sweep, where, runlocal=False, extra=None):
  """Raises UserError naming the problem for a sweep that cannot run: no points or seeds, an
  override key its config lacks, a point whose config fails the config checks, a metric of an
  unknown stage or of an evaluator that stage does not run."""
  from mmjax.train import validate  # pylint: disable=g-import-not-at-top
  if not sweep.points:
    raise UserError(f"{where}: the sweep has no points.")
  if not sweep.seeds:
    raise UserError(f"{where}: the sweep has no seeds.")
  if not sweep.metrics:
    raise UserError(f"{where}: the sweep names no metrics for its table.")
  keys = set().union(*sweep.points)
  names = [point_name(p) for p in sweep.points]
  if len(set(names)) < len(names):
    raise UserError(f"{where}: two points share a name: {names}.")
  configs = {}
  for overrides in sweep.points:
    for stage, (spec, stage_overrides) in stage_configs(
        sweep, overrides, sweep.seeds[0], extra).items():
      config = load_config(spec, runlocal)
      for key, value in stage_overrides.items():
        _set(config, key, value, f"{where}, point {point_name(overrides)}, stage {stage}")
      try:
        validate.check_config(config)
      except UserError as e:
        raise UserError(f"{where}, point {point_name(overrides)}, stage {stage}: {e}") from None
      configs[stage] = config
  if sweep.x not in keys:
    raise UserError(f"{where}: x={sweep.x!r} is not an override of any point {sorted(keys)}.")
  if sweep.series and sweep.series not in keys:
    raise UserError(f"{where}: series={sweep.series!r} is not an override of any point.")
  for metric in (*sweep.metrics, *itertools.chain(*sweep.mean_of.values())):
    stage, _, key = metric.partition("/")
    if stage not in configs:
      raise UserError(f"{where}: metric {metric!r}: no stage {stage!r} (stages: "
                      f"{list(configs)}).")
    parts = key.split("/")
    if parts[0] == "eval" and (len(parts) < 3 or parts[1] not in configs[stage].evals):
      raise UserError(f"{where}: metric {metric!r}: stage {stage!r} runs no evaluator "
                      f"{parts[1] if len(parts) > 1 else ''!r} (its evals: "
                      f"{list(configs[stage].evals)}).")
    if parts[0] == "train" and len(parts) > 2 and parts[1] == "loss" and (
        parts[2] not in configs[stage].objectives):
      raise UserError(f"{where}: metric {metric!r}: stage {stage!r} has no objective "
                      f"{parts[2]!r}.")
  return configs


# -- Running. ----------------------------------------------------------------------------------

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


# -- Results. ----------------------------------------------------------------------------------

def collect(sweep, all_tasks, workdir, report=None, header=""):
  """result.json of finished tasks -> results.jsonl, results.md, results.png."""
  for task in all_tasks:
    if not task.done and all(os.path.exists(os.path.join(task.folder, s, "done"))
                             for s in task.stages):
      finish(sweep, task)
  records = []
  for task in all_tasks:
    if task.done:
      with open(os.path.join(task.folder, "result.json"), encoding="utf-8") as f:
        records.append(json.load(f))
  with open(os.path.join(workdir, "results.jsonl"), "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  table = markdown(sweep, records, len(all_tasks))
  with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(header + table)
  plot(sweep, records, os.path.join(workdir, "results.png"))
  if report:
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report + ".md", "w", encoding="utf-8") as f:
      f.write(header + table)
    with open(report + ".jsonl", "w", encoding="utf-8") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    plot(sweep, records, report + ".png")
  return records


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


def _columns(sweep):
  return list(sweep.metrics) + list(sweep.mean_of)


def _values(sweep, record):
  out = dict(record["metrics"])
  for name, metrics in sweep.mean_of.items():
    out[name] = statistics.mean(record["metrics"][m] for m in metrics)
  return out


def _mean_std(values):
  if not values:
    return None, None
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary(sweep, records):
  """[(overrides, n, {column: (mean, std)}, [seed values per column])] in point order."""
  rows = []
  for overrides in sweep.points:
    name = point_name(overrides)
    mine = [_values(sweep, r) for r in records if r["point"] == name]
    stats = {c: _mean_std([v[c] for v in mine]) for c in _columns(sweep)}
    rows.append((overrides, len(mine), stats, {c: [v[c] for v in mine] for c in _columns(sweep)}))
  return rows


def markdown(sweep, records, total):
  columns = _columns(sweep)
  keys = list(dict.fromkeys(k for p in sweep.points for k in p))
  commits = sorted({r["commit"] for r in records})
  lines = [f"{len(records)} of {total} point x seed runs done, at commit "
           f"{', '.join(f'`{c}`' for c in commits)}; mean ± std over seeds (every seed's value "
           "in the `.jsonl` beside this table).", "",
           "| " + " | ".join(keys + ["seeds"] + columns) + " |",
           "|" + "---|" * (len(keys) + 1 + len(columns))]
  for overrides, n, stats, _ in summary(sweep, records):
    cells = [str(overrides.get(k, "")) for k in keys] + [str(n)]
    cells += [f"{m:.3f} ± {s:.3f}" if m is not None else "" for m, s in
              (stats[c] for c in columns)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(sweep, records, path):
  """One panel per metric: mean against the swept value, std error bars, a line per series."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  columns = _columns(sweep)
  cols = min(3, len(columns))
  rows_n = math.ceil(len(columns) / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
  rows = summary(sweep, records)
  series = list(dict.fromkeys(o.get(sweep.series, "") for o, *_ in rows))
  xs_all = list(dict.fromkeys(o.get(sweep.x) for o, *_ in rows))
  numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
  for ax, column in zip(axes.flat, columns):
    for s in series:
      pts = [(o.get(sweep.x), stats[column]) for o, n, stats, _ in rows
             if o.get(sweep.series, "") == s and n]
      if not pts:
        continue
      xs = [x if numeric else xs_all.index(x) for x, _ in pts]
      ax.errorbar(xs, [m for _, (m, _) in pts], yerr=[sd for _, (_, sd) in pts], marker="o",
                  capsize=3, label=f"{sweep.series.split('.')[-1]}={s}" if sweep.series else None)
    if not numeric:
      ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all], rotation=20)
    if numeric and sweep.x.endswith("batch_size"):
      ax.set_xscale("log", base=2)
    ax.set_title(column, fontsize=8)
    ax.set_xlabel(sweep.x.split(".")[-1] if numeric else sweep.x)
    ax.grid(alpha=0.3)
    if sweep.series:
      ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(columns):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# -- Reference curves. -------------------------------------------------------------------------

def reference_record(workdir, steps, metrics, rtol, atol, note=""):
  """A reference of a finished run: the train losses at `steps` (compared with relative
  tolerance `rtol`) and the final `metrics` (absolute tolerance `atol`)."""
  record = {"note": note, "rtol": rtol, "atol": atol, "train": {}, "final": {}}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  for r in lines:
    losses = {k: v for k, v in r.items() if k == "train/loss" or k.startswith("train/loss/")}
    if r["step"] in steps and losses:
      record["train"][str(r["step"])] = losses
  for key in metrics:
    record["final"][key] = last_value(workdir, key)
  return record


def compare(workdir, reference):
  """[(what, reference value, run value, ok)] for every number of `reference` (a dict as
  written by reference_record, with 'rtol' for train losses and 'atol' for final metrics)."""
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    by_step = {}
    for line in f:
      r = json.loads(line)
      by_step.setdefault(r["step"], {}).update(r)
  for step, losses in reference["train"].items():
    for key, want in losses.items():
      got = by_step.get(int(step), {}).get(key)
      ok = got is not None and math.isclose(got, want, rel_tol=reference["rtol"])
      rows.append((f"step {step} {key}", want, got, ok))
  for key, want in reference["final"].items():
    got = last_value(workdir, key)
    ok = got is not None and abs(got - want) <= reference.get("atol", 0.0) + 1e-12
    rows.append((f"final {key}", want, got, ok))
  return rows


# -- Command line. -----------------------------------------------------------------------------

def _parse_set(text):
  """'a.b=1,c=x' -> {'a.b': 1, 'c': 'x'} (values as Python literals, else strings)."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in filter(None, text.split(",")):
    key, eq, value = item.partition("=")
    if not eq:
      raise UserError(f"--set: {item!r} is not KEY=VALUE.")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "compare":
    return _compare_main(argv[1:])
  if argv and argv[0] == "reference":
    return _reference_main(argv[1:])
  p = argparse.ArgumentParser(prog="python -m mmjax.sweep", description=__doc__.split("\n")[0])
  p.add_argument("--sweep", required=True, nargs="+", help="sweep file(s); several only with "
                 "--check")
  p.add_argument("--workdir", help="where the runs and results go")
  p.add_argument("--launcher", default="local", choices=("local", "print", "slurm"))
  p.add_argument("--submit", action="store_true", help="slurm: sbatch the script")
  p.add_argument("--sbatch", action="append", default=[],
                 help="slurm: an extra #SBATCH line, e.g. --sbatch=--gres=gpu:1")
  p.add_argument("--check", action="store_true", help="validate the sweep file(s) only")
  p.add_argument("--collect", action="store_true", help="only write the results files")
  p.add_argument("--runlocal", action="store_true",
                 help="every stage's config with 'runlocal' (seconds per point; smoke tests)")
  p.add_argument("--points", default="", help="only these point indices, e.g. 0,1")
  p.add_argument("--seeds", default="", help="only these seeds, e.g. 0")
  p.add_argument("--set", default="", help="overrides for every stage, e.g. data.dir=/data")
  p.add_argument("--report", default="", help="also write REPORT.md, .png and .jsonl (commit "
                 "them: a later run adopts the points REPORT.jsonl holds)")
  args = p.parse_args(argv)
  try:
    extra = _parse_set(args.set)
    # A pattern the shell left alone (--sweep=configs/ablations/*.py) is expanded here.
    args.sweep = [p for pattern in args.sweep for p in (sorted(glob.glob(pattern)) or [pattern])]
    if args.check:
      for path in args.sweep:
        check(load_sweep(path), path, args.runlocal, extra)
        print(f"{path}: ok")
      return 0
    if len(args.sweep) != 1 or not args.workdir:
      raise UserError("Give one --sweep and a --workdir (several sweep files only with "
                      "--check).")
    path = args.sweep[0]
    sweep = load_sweep(path)
    if args.points:
      sweep = dataclasses.replace(sweep, points=[sweep.points[int(i)]
                                                 for i in args.points.split(",")])
    if args.seeds:
      sweep = dataclasses.replace(sweep, seeds=tuple(int(s) for s in args.seeds.split(",")))
    check(sweep, path, args.runlocal, extra)
    os.makedirs(args.workdir, exist_ok=True)
    all_tasks = tasks(sweep, args.workdir, args.runlocal, extra)
    # The command that runs the sweep (a --collect run reports what that command made).
    command_line = "python -m mmjax.sweep " + " ".join(
        shlex.quote(a) for a in argv if a != "--collect")
    header = (f"Sweep `{os.path.relpath(os.path.abspath(path), REPO)}`, command "
              f"`{command_line}`.\n\n")
    if args.launcher == "print":
      for task in all_tasks:
        for cmd in task.stages.values():
          print(" ".join(map(shlex.quote, cmd)))
      return 0
    if args.launcher == "slurm":
      script = os.path.join(args.workdir, "sweep.sbatch")
      with open(script, "w", encoding="utf-8") as f:
        f.write(slurm_script(path, args.workdir, all_tasks, args))
      print(f"Wrote {script}: {len(all_tasks)} array tasks.")
      if args.submit:
        out = subprocess.check_output(["sbatch", "--parsable", script], text=True).strip()
        print(f"Submitted array job {out}; its last lines collect the results into "
              f"{args.workdir}/results.md (or run this command again with --collect).")
      return 0
    if args.report and adopt_reported(all_tasks, args.report):
      print(f"sweep: results of earlier runs taken from {args.report}.jsonl.")
    results = lambda: collect(sweep, all_tasks, args.workdir, args.report or None, header)
    if not args.collect:
      run_local(sweep, all_tasks, on_done=results)
    records = results()
    print(f"{len(records)} of {len(all_tasks)} runs done: {args.workdir}/results.md, "
          "results.png, results.jsonl")
    return 0
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _compare_main(argv):
  p = argparse.ArgumentParser(prog="python -m mmjax.sweep compare")
  p.add_argument("workdir")
  p.add_argument("--reference", required=True,
                 help="a reference file, e.g. configs/reference/pretrain_digits_runlocal.json")
  args = p.parse_args(argv)
  path = args.reference
  try:
    with open(path, encoding="utf-8") as f:
      reference = json.load(f)
    rows = compare(args.workdir, reference)
  except (UserError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for what, want, got, ok in rows:
    print(f"{'ok  ' if ok else 'DIFF'} {what}: reference {want:.6g}, run "
          + ("missing" if got is None else f"{got:.6g}"))
  bad = sum(not ok for *_, ok in rows)
  print(f"{len(rows) - bad} of {len(rows)} match {path}.")
  return 1 if bad else 0



def _reference_main(argv):
  p = argparse.ArgumentParser(prog="python -m mmjax.sweep reference")
  p.add_argument("workdir")
  p.add_argument("--out", required=True)
  p.add_argument("--steps", required=True, help="train steps whose losses are kept, e.g. 5,10")
  p.add_argument("--metrics", default="", help="final metrics (default: every eval/ metric)")
  p.add_argument("--rtol", type=float, required=True)
  p.add_argument("--atol", type=float, required=True)
  p.add_argument("--note", default="", help="what run this is: command, machine, commit")
  args = p.parse_args(argv)
  metrics = [m for m in args.metrics.split(",") if m]
  if not metrics:
    with open(os.path.join(args.workdir, "metrics.jsonl"), encoding="utf-8") as f:
      metrics = sorted({k for line in f for k in json.loads(line) if k.startswith("eval/")})
  record = reference_record(args.workdir, [int(s) for s in args.steps.split(",")], metrics,
                            args.rtol, args.atol, args.note)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
  print(f"Wrote {args.out}: losses at {len(record['train'])} steps, "
        f"{len(record['final'])} final metrics.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
