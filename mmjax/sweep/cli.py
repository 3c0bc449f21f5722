"""The command line, `python -m mmjax.sweep` (usage in mmjax/sweep/__init__.py): run, print,
SLURM, --check and --collect of a sweep file; `compare` and `reference` subcommands."""
import argparse
import dataclasses
import glob
import json
import os
import shlex
import subprocess
import sys

from mmjax.errors import UserError
from mmjax.paths import expand_path
from mmjax.sweep.claims import claims_table, verdicts
from mmjax.sweep.reference import compare, reference_record
from mmjax.sweep.report import collect
from mmjax.sweep.runner import (add_seconds, adopt_reported, check_marked, mark_done, run_local,
                                slurm_script, stage_done, tasks)
from mmjax.sweep.spec import REPO, check, load_sweep


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
  if argv and argv[0] == "stage-done":
    return _stage_done_main(argv[1:])
  import mmjax.sweep  # pylint: disable=g-import-not-at-top  (its docstring is the manual)
  p = argparse.ArgumentParser(prog="python -m mmjax.sweep",
                              description=mmjax.sweep.__doc__.split("\n")[0])
  p.add_argument("--sweep", required=True, nargs="+", help="sweep file(s), each optionally "
                 "with ':pod' (the pod scale); several only with --check")
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
  p.add_argument("--cost", action="store_true", help="print what the sweep costs in "
                 "accelerator-hours by the planner (compiles each stage's step on the CPU)")
  p.add_argument("--accelerator", default="NVIDIA H100 80GB HBM3",
                 help="--cost: a device kind of mmjax.train.mfu.PEAK_TFLOPS")
  p.add_argument("--mfu", type=float, default=0.4, help="--cost: the MFU assumed")
  p.add_argument("--report", default="", help="also write REPORT.md, .png and .jsonl (commit "
                 "them: a later run adopts the points REPORT.jsonl holds)")
  args = p.parse_args(argv)
  try:
    # The shell leaves '~' and $VARS after '=' as they are (--workdir=~/sweeps).
    args.workdir = expand_path(args.workdir, "--workdir")
    args.report = expand_path(args.report, "--report")
    args.sweep = [expand_path(pattern, "--sweep") for pattern in args.sweep]
    extra = _parse_set(args.set)
    # A pattern the shell left alone (--sweep=configs/ablations/*.py, or *.py:pod for every
    # file at the pod scale) is expanded here.
    args.sweep = [p + colon + arg for pattern in args.sweep
                  for path, colon, arg in [pattern.partition(":")]
                  for p in (sorted(glob.glob(path)) or [path])]
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
    check_marked(all_tasks)
    # The command that runs the sweep (a --collect run reports what that command made).
    command_line = "python -m mmjax.sweep " + " ".join(
        shlex.quote(a) for a in argv if a != "--collect")
    header = (f"Sweep `{os.path.relpath(os.path.abspath(path), REPO)}`, command "
              f"`{command_line}`.\n\n")
    if args.cost:
      from mmjax.sweep.cost import sweep_cost  # pylint: disable=g-import-not-at-top
      sweep_cost(sweep, all_tasks, extra, args.accelerator, args.mfu)
      return 0
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
          "results.png, results.jsonl" + (", results.verdicts.json" if sweep.claims else ""))
    if sweep.claims:
      print("\n" + claims_table(verdicts(sweep, records)), end="")
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
    rows = compare(args.workdir, reference, path)
  except (UserError, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for what, want, got, ok in rows:
    print(f"{'ok  ' if ok else 'DIFF'} {what}: reference {want:.6g}, run "
          + ("missing" if got is None else f"{got:.6g}"))
  bad = sum(not ok for *_, ok in rows)
  print(f"{len(rows) - bad} of {len(rows)} match {path}.")
  return 1 if bad else 0


def _stage_done_main(argv):
  """What the SLURM script asks of each stage: is it done (exit 0) or not (1); with --mark,
  after its main.py exited 0, mark it done, or say where it stopped (exit 1)."""
  p = argparse.ArgumentParser(prog="python -m mmjax.sweep stage-done")
  p.add_argument("workdir", help="the stage's main.py workdir")
  p.add_argument("--total-steps", type=int, required=True, help="the step it trains to")
  p.add_argument("--mark", action="store_true", help="mark it done if it trained that far")
  p.add_argument("--seconds", type=float, help="with --mark: how long its main.py ran, added to "
                 "the task's total (TASK_FOLDER/task.json) whatever its exit status")
  p.add_argument("--status", type=int, default=0, help="with --mark: main.py's exit status")
  p.add_argument("--config-hash", default="", help="with --mark: the task's config hash")
  args = p.parse_args(argv)
  if not args.mark:
    return 0 if stage_done(args.workdir, args.total_steps) else 1
  if args.seconds is not None:
    add_seconds(os.path.dirname(os.path.abspath(args.workdir)), args.seconds,
                args.config_hash or None)
  if args.status:
    print(f"error: {args.workdir}: main.py failed (exit {args.status}).", file=sys.stderr)
    return 1
  try:
    mark_done(args.workdir, args.total_steps)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


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
