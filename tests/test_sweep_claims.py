"""Claims and verdicts (mmjax/sweep/claims.py) on hand-made records: each of the four verdicts,
the interaction form, the ceiling, the baselines a claim's points must beat, and the seeds that
pair; spec.check refusing a claim on an unknown point or metric; the results files' baseline
rows, Claims table and verdicts JSON. Expected numbers are computed here with numpy."""
import dataclasses
import json
import pathlib
import re
import sys
import textwrap

import numpy as np
import pytest

from mmjax import sweep as sweep_lib
from mmjax.errors import UserError
from mmjax.sweep import LABEL, Claim, Downstream, Sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
ACC = "probe/eval/classification/accuracy"
LOSS = "probe/train/loss"
R1 = "pretrain/eval/retrieval/text_to_image/r@1"


def _sweep(points, claims, baselines=(), mean_of=None):
  return Sweep(base="unused.py", points=[{LABEL: p} for p in points], x=LABEL, seeds=(0, 1, 2),
               downstream={"probe": Downstream("unused.py")},
               baselines={b: {} for b in baselines}, metrics=(ACC, LOSS, R1),
               mean_of=mean_of or {}, claims=tuple(claims))


def _records(values, metric=ACC):
  """{point: [value at seed 0, 1, ...]} -> result records (None: that seed is missing)."""
  return [dict(point=p, seed=s, metrics={metric: v}) for p, vs in values.items()
          for s, v in enumerate(vs) if v is not None]


def _expected(greater, than):
  """n, mean and standard error (ddof=1) of the paired differences, by numpy."""
  d = np.mean(greater, axis=0) - np.mean(than, axis=0)
  return len(d), d.mean(), d.std(ddof=1) / np.sqrt(len(d))


def _one(sweep, records):
  (verdict,) = sweep_lib.verdicts(sweep, records)
  return verdict


A = [0.70, 0.74, 0.71]
B = [0.60, 0.65, 0.62]
NOISY = [0.80, 0.62, 0.69]


@pytest.mark.parametrize("greater, than, values, verdict", [
    ("a", "b", {"a": A, "b": B}, "reproduced"),
    ("b", "a", {"a": A, "b": B}, "opposite"),
    ("a", "c", {"a": A, "c": NOISY}, "inconclusive"),
])
def test_verdict_from_the_paired_differences(greater, than, values, verdict):
  sweep = _sweep(values, [Claim("x", ACC, greater, than)])
  got = _one(sweep, _records(values))
  n, mean, se = _expected([values[greater]], [values[than]])
  assert (got.n, got.verdict) == (n, verdict)
  assert got.mean == pytest.approx(mean) and got.se == pytest.approx(se)
  # The rule, restated: beyond 2 standard errors or not.
  assert verdict == ("reproduced" if mean > 2 * se else "opposite" if mean < -2 * se
                     else "inconclusive")


def test_interaction_of_four_points():
  """(s16 + i128) - (i16 + s128): the sigmoid loss's lead at batch 16 over its lead at 128."""
  values = {"s16": [0.50, 0.55, 0.52], "i16": [0.40, 0.41, 0.45],
            "s128": [0.80, 0.82, 0.79], "i128": [0.83, 0.86, 0.84]}
  claim = Claim("sigmoid helps more at small batch", ACC, ("s16", "i128"), ("i16", "s128"))
  got = _one(_sweep(values, [claim]), _records(values))
  n, mean, se = _expected([values["s16"], values["i128"]], [values["i16"], values["s128"]])
  assert got.n == n and got.mean == pytest.approx(mean) and got.se == pytest.approx(se)
  assert got.verdict == ("reproduced" if mean > 2 * se else "inconclusive")


def test_only_the_seeds_every_point_has_are_paired():
  values = {"a": A, "b": [B[0], None, B[2]]}
  got = _one(_sweep(values, [Claim("x", ACC, "a", "b")]), _records(values))
  n, mean, se = _expected([[A[0], A[2]]], [[B[0], B[2]]])
  assert (got.n, got.mean, got.se) == (n, pytest.approx(mean), pytest.approx(se))


def test_one_seed_is_inconclusive():
  values = {"a": [0.9, None, None], "b": [0.1, 0.2, 0.3]}
  got = _one(_sweep(values, [Claim("x", ACC, "a", "b")]), _records(values))
  assert (got.n, got.se, got.verdict) == (1, None, "inconclusive")
  assert got.mean == pytest.approx(0.8)


def test_a_bounded_metric_at_its_ceiling_is_untestable():
  values = {"a": [0.99, 1.0, 0.995], "b": [0.90, 0.91, 0.92]}
  got = _one(_sweep(values, [Claim("x", ACC, "a", "b")]), _records(values))
  assert got.verdict == "untestable" and "ceiling" in got.why and "a 0.995" in got.why
  # A loss is not bounded by 1: the same numbers are a verdict there.
  loss = _one(_sweep(values, [Claim("x", LOSS, "a", "b")]), _records(values, LOSS))
  assert loss.verdict == "reproduced"
  # The sweep sets the ceiling.
  sweep = dataclasses.replace(_sweep(values, [Claim("x", ACC, "a", "b")]), ceiling=1.01)
  assert _one(sweep, _records(values)).verdict == "reproduced"


def test_a_claim_whose_points_do_not_beat_the_baselines_is_untestable():
  """Both points clearly apart, but neither beats raw input by 2 standard errors: untestable.
  Once one point beats every baseline, the same difference is reproduced."""
  values = {"a": A, "b": B, "baseline:raw": [0.69, 0.75, 0.70], "baseline:scratch": B}
  claim = Claim("x", ACC, "a", "b")
  sweep = _sweep(["a", "b"], [claim], baselines=("raw", "scratch"))
  got = _one(sweep, _records(values))
  assert got.verdict == "untestable" and "baseline:raw" in got.why
  n, mean, se = _expected([A], [values["baseline:raw"]])
  assert not mean > 2 * se  # The rule it applied, by numpy.
  values["baseline:raw"] = [0.30, 0.31, 0.29]
  assert _one(sweep, _records(values)).verdict == "reproduced"
  # A baseline that has not run yet is not beaten either.
  del values["baseline:raw"]
  assert _one(sweep, _records(values)).verdict == "untestable"


def test_a_claim_against_a_baseline_is_that_comparison():
  """'a beats raw input' is judged by its own paired difference, not found untestable for not
  beating the baselines: it is that test."""
  values = {"a": A, "baseline:raw": [0.69, 0.75, 0.70], "baseline:scratch": [0.1, 0.1, 0.1]}
  sweep = _sweep(["a"], [Claim("x", ACC, "a", "baseline:raw")], baselines=("raw", "scratch"))
  got = _one(sweep, _records(values))
  n, mean, se = _expected([A], [values["baseline:raw"]])
  assert got.verdict == ("reproduced" if mean > 2 * se else "opposite" if mean < -2 * se
                         else "inconclusive") and got.verdict != "untestable"
  assert got.mean == pytest.approx(mean) and got.n == n


def test_baselines_do_not_judge_a_pretraining_metric():
  """Baselines have no pretraining: a claim on a pretraining metric is judged on its own."""
  values = {"a": A, "b": B}
  sweep = _sweep(["a", "b"], [Claim("x", R1, "a", "b")], baselines=("scratch",))
  assert _one(sweep, _records(values, R1)).verdict == "reproduced"


def test_a_claim_on_a_mean_of_column():
  records = [dict(point=p, seed=s, metrics={ACC: acc[s], R1: r1[s]})
             for p, acc, r1 in (("a", A, [0.5, 0.6, 0.55]), ("b", B, [0.4, 0.45, 0.42]))
             for s in range(3)]
  sweep = _sweep(["a", "b"], [Claim("x", "avg", "a", "b")], mean_of={"avg": [ACC, R1]})
  got = _one(sweep, records)
  a = np.mean([A, [0.5, 0.6, 0.55]], axis=0)
  b = np.mean([B, [0.4, 0.45, 0.42]], axis=0)
  n, mean, se = _expected([a], [b])
  assert (got.n, got.mean, got.se) == (n, pytest.approx(mean), pytest.approx(se))


def _sweep_file(tmp_path, claims, extra=""):
  path = tmp_path / "claims_sweep.py"
  path.write_text(textwrap.dedent(f"""\
      from mmjax.sweep import LABEL, Claim, Downstream, Sweep
      def get_sweep():
        return Sweep(base="configs/pretrain_digits.py:runlocal", x=LABEL,
                     points=[{{LABEL: "p25", "objectives.masked_image.mask_ratio": 0.25}},
                             {{LABEL: "p75", "objectives.masked_image.mask_ratio": 0.75}}],
                     downstream={{"probe": Downstream("configs/finetune_digits.py:runlocal")}},
                     metrics=("{ACC}",), mean_of={{"avg": ["{ACC}"]}}, {extra}
                     claims=({claims},))
      """))
  return str(path)


@pytest.mark.parametrize("claim, extra, message", [
    (f"Claim('probe rises', '{ACC}', 'p75', 'p50')", "", "claim 'probe rises': no point 'p50'"),
    ("Claim('probe rises', 'probe/eval/classification/acc', 'p75', 'p25')", "",
     "claim 'probe rises': metric 'probe/eval/classification/acc' is not a column"),
    (f"Claim('probe rises', '{ACC}', ('p75',), ())", "", "claim 'probe rises': it needs points"),
    (f"Claim('beats scratch', '{ACC}', 'p75', 'baseline:scratch')", "",
     "claim 'beats scratch': no point 'baseline:scratch'"),
    (f"Claim('ok', '{ACC}', 'p75', 'baseline:scratch')",
     "baselines={'scratch': {'optimizer.lrr': 0.1}},", "baseline scratch, stage probe: override"),
])
def test_check_refuses_a_bad_claim_or_baseline(tmp_path, claim, extra, message):
  path = _sweep_file(tmp_path, claim, extra)
  with pytest.raises(UserError, match=re.escape(message)) as e:
    sweep_lib.check(sweep_lib.load_sweep(path), path)
  assert str(e.value).startswith(path)


def test_check_accepts_claims_on_points_baselines_and_mean_of(tmp_path):
  path = _sweep_file(tmp_path, f"Claim('a', 'avg', 'p75', 'p25'), "
                               f"Claim('b', '{ACC}', ('p75', 'p25'), 'baseline:scratch')",
                     "baselines={'scratch': {}},")
  sweep_lib.check(sweep_lib.load_sweep(path), path)


def test_results_files_show_baselines_claims_and_verdicts(tmp_path):
  """Records for every task of tests/sweep_with_claims.py: the table has a row per point and
  per baseline (pretraining columns blank), the Claims table and the verdicts JSON agree with
  claims.verdicts, and the plot is written."""
  sweep = sweep_lib.load_sweep(str(REPO / "tests" / "sweep_with_claims.py"))
  all_tasks = sweep_lib.tasks(sweep, tmp_path / "w")
  accuracy = {"mask25": 0.6, "mask75": 0.7, "baseline:random_init": 0.3,
              "baseline:random_init_lr2x": 0.35}
  for task in all_tasks:
    metrics = {"probe/eval/classification/accuracy": accuracy[task.point] + 0.01 * task.seed}
    if not task.baseline:
      metrics["pretrain/eval/retrieval/text_to_image/r@1"] = 0.5 + 0.02 * task.seed
    pathlib.Path(task.folder).mkdir(parents=True)
    (pathlib.Path(task.folder) / "result.json").write_text(json.dumps(dict(
        point=task.point, overrides=task.overrides, seed=task.seed, commit="c", dirty=True,
        config_hash=task.config_hash, seconds=1.0, metrics=metrics)))
  report = str(tmp_path / "docs" / "x")
  records = sweep_lib.collect(sweep, all_tasks, tmp_path / "w", report)
  assert len(records) == 12
  table = pathlib.Path(report + ".md").read_text()
  assert "at commit `c` (with uncommitted changes)" in table
  assert re.search(r"^\| mask75 \| 0\.75 \| 3 \| 0\.520 ± 0\.020 \| 0\.710 ± 0\.010 \|$",
                   table, re.M), table
  assert re.search(r"^\| baseline: random_init \|  \| 3 \|  \| 0\.310 ± 0\.010 \|$",
                   table, re.M), table
  assert "## Claims" in table
  assert re.search(r"^\| the linear probe is better at 75 % than at 25 % masking \| "
                   r"`probe/eval/classification/accuracy` \| MAE Fig\. 5: 73\.5 vs 66\.0 \| "
                   r"\+0\.100 ± 0\.000 \(n=3\) \| \*\*reproduced\*\* \|$", table, re.M), table
  written = json.loads(pathlib.Path(report + ".verdicts.json").read_text())
  assert written["claims"] == [v.to_json() for v in sweep_lib.verdicts(sweep, records)]
  assert [c["verdict"] for c in written["claims"]] == ["reproduced", "reproduced"]
  assert (tmp_path / "w" / "results.verdicts.json").exists()
  assert pathlib.Path(report + ".png").read_bytes()[:4] == b"\x89PNG"


# Stands in for main.py: trains --workdir to --total steps at once, logging the accuracy the
# test gives its point (by folder) and seed, and a checkpoint of the last step.
FAKE_MAIN = """\
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
workdir, total = args["workdir"], int(args["total"])
task = os.path.basename(os.path.dirname(os.path.dirname(workdir)))
seed = int(os.path.basename(os.path.dirname(workdir))[4:])
accuracy = {"mask25": 0.6, "mask75": 0.7}.get(task, 0.3) + 0.01 * seed * (task == "mask75")
os.makedirs(os.path.join(workdir, "checkpoints", str(total), "state"))
with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
  f.write(json.dumps({"step": total, "eval/classification/accuracy": accuracy,
                      "eval/retrieval/text_to_image/r@1": 0.5}) + "\\n")
"""


def test_the_runner_prints_the_claims_and_writes_the_verdicts(tmp_path, monkeypatch, capsys):
  """`python -m mmjax.sweep` over tests/sweep_with_claims.py, each stage's main.py a stand-in:
  every point and baseline runs, and the runner prints the Claims table it wrote."""
  (tmp_path / "fake_main.py").write_text(FAKE_MAIN)

  def fake_command(spec, workdir, overrides, runlocal=False):
    total = sweep_lib.stage_config(spec, overrides, runlocal).total_steps
    return [sys.executable, str(tmp_path / "fake_main.py"), f"--workdir={workdir}",
            f"--total={total}"]

  monkeypatch.setattr(sweep_lib.runner, "command", fake_command)
  monkeypatch.setattr(sweep_lib.report, "plot", lambda *_: None)  # Drawn after each task.
  report = tmp_path / "docs" / "with_claims"
  argv = [f"--sweep={REPO / 'tests' / 'sweep_with_claims.py'}", f"--workdir={tmp_path / 'w'}",
          "--runlocal", f"--report={report}"]
  assert sweep_lib.main(argv) == 0
  out = capsys.readouterr().out
  assert "12 of 12 runs done" in out and "## Claims" in out
  lines = [line for line in out.splitlines() if line.startswith("| ")]
  assert lines[-2].endswith("| +0.110 ± 0.006 (n=3) | **reproduced** |"), out
  assert lines[-1].endswith("| +0.410 ± 0.006 (n=3) | **reproduced** |"), out
  assert "\n".join(lines[-2:]) in (tmp_path / "docs" / "with_claims.md").read_text()
  written = json.loads((tmp_path / "docs" / "with_claims.verdicts.json").read_text())
  assert [c["verdict"] for c in written["claims"]] == ["reproduced", "reproduced"]
