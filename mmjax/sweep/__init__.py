r"""Sweeps: an ablation is a sweep file, and reproducing it is one command.

  python -m mmjax.sweep --sweep=configs/ablations/mae_mask_ratio.py \
      --workdir=workdirs/ablations/mae_mask_ratio [--launcher=local|print|slurm] [--submit]
  python -m mmjax.sweep --sweep=configs/ablations/*.py --check     # validate, train nothing
  python -m mmjax.sweep --sweep=configs/ablations/fusion.py:pod --workdir=W --cost  # by the planner
  python -m mmjax.sweep compare WORKDIR --reference=FILE     # a run against its reference curve
  python -m mmjax.sweep reference WORKDIR --out=FILE --steps=5,10 --rtol=5e-4 --atol=0.02
  python -m mmjax.sweep stage-done WORKDIR --total-steps=N [--mark]  # the SLURM script's check

A sweep file (configs/ablations/<name>.py) defines `get_sweep(arg="")` returning a `Sweep`
(`--sweep=FILE:arg` passes arg: the shipped ones take their scale, '' for this machine's
benchmark or 'pod', configs/common.py: scale): the base
config, the points (config overrides), the seeds, the downstream stages run from each point's
pretraining (fine-tuning or a linear probe through `init_from`), the metrics of its table, the
baselines (the downstream stages alone, from random init, with their own overrides: e.g.
{"random_init": {}, "raw_input": {"model.name": "raw"}}) and the paper's claims (`Claim`: a
comparison of points on one metric, judged from the seeds by mmjax/sweep/claims.py). Its
docstring states the paper's protocol and result, and the command.
Each point x seed gets WORKDIR/<point>/seed<k>/ (a baseline WORKDIR/baseline_<name>/seed<k>/),
with one `main.py` workdir per stage ('pretrain', then each downstream stage), a `done` marker
per finished stage, task.json (the hash of the task's resolved configs and the seconds of all
its stage invocations, resumed ones included) and `result.json` (written atomically) when all
are done. A stage is done only when its latest checkpoint is its
config's total_steps: main.py exits 0 when preempted (SIGTERM), and the runner then stops,
naming the step it stopped at. A second invocation skips finished points and resumes
interrupted ones (each stage resumes from its own checkpoints). A point's metrics are those its
stages logged at their final step. WORKDIR gets `results.jsonl` (one record per point x
seed: point, overrides, seed, config hash, commit, dirty (uncommitted changes outside docs/),
seconds, metrics), `results.md` (mean ± std over seeds, baselines as rows, then the claims:
paper's number, our mean paired difference ± standard error, verdict), `results.verdicts.json`
and `results.png` (each metric against the swept value, one line per series, std error bars,
baselines as dashed lines), rewritten after each finished point. With --report=PREFIX the same
go to PREFIX.md, .png, .verdicts.json and .jsonl (e.g. docs/ablations/<name>); a later
invocation with the same --report takes the points PREFIX.jsonl already holds as done, so a
sweep committed half-way resumes on another machine, but only those whose config hash is the
one the sweep now gives them: any other is run again, and the runner says so. A task that
PREFIX.jsonl lacks is then looked up by its config hash in the other reports beside it (the
same configs are the same run: sweeps with the same downstream stages share their baselines),
kept with `adopted_from` naming that report. `--cost` prints what each point costs in
accelerator-hours (mmjax/sweep/cost.py: its step's matmul FLOPs, traced by the planner).

Modules: spec (the Sweep file format, loading and checking), runner (tasks, running and
resuming them locally or as a SLURM array), claims (verdicts from the seeds), report (results
tables and plots), reference (reference curves and comparing a run with one), cost
(accelerator-hours by the planner), cli (the command line; `__main__` runs it).
"""
# The names sweep files, tests and scripts use, from the modules that define them.
from mmjax.sweep.claims import (  # pylint: disable=unused-import
    Verdict, claims_table, judge, verdicts)
from mmjax.sweep.cli import main  # pylint: disable=unused-import
from mmjax.sweep.reference import compare, reference_record  # pylint: disable=unused-import
from mmjax.sweep.report import (  # pylint: disable=unused-import
    baseline_summary, collect, markdown, plot, summary)
from mmjax.sweep.runner import (  # pylint: disable=unused-import
    Task, add_seconds, adopt_reported, check_marked, command, finish, last_value, mark_done,
    run_local, slurm_script, stage_done, tasks, trained_to, value_at)
from mmjax.sweep.spec import (  # pylint: disable=unused-import
    BASELINE, LABEL, PRETRAIN, REPO, Claim, Downstream, Sweep, check, config_hash, load_config,
    load_sweep, point_name, product, stage_config, stage_configs)
