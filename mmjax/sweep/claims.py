"""Verdicts computed, not written: each `Claim` of a sweep judged from its seeds.

For a claim, d_s = (mean over its `greater` points) - (mean over its `than` points) of the
metric at seed s, over the seeds that every named point has. Its n, mean and standard error
(sample std, ddof=1, / sqrt(n)) give the verdict:

  untestable    the metric is bounded by 1 (an accuracy, an R@k) and a named point's mean
                reaches the sweep's ceiling; or the sweep has baselines that measure the
                metric, and no named point beats every one of them by more than 2 standard
                errors of the paired (same-seed) difference: the points compared are no better
                than no pretraining, so their order says nothing about the paper's method (a
                claim that names a baseline is that comparison itself: no such check);
  reproduced    mean > 2 SE;
  opposite      mean < -2 SE;
  inconclusive  otherwise, and when n < 2 (no standard error).
"""
import dataclasses
import json
import math
import re
import statistics

from mmjax.paths import atomic_open
from mmjax.sweep.spec import BASELINE, Claim, measured_by_baselines, record_values

REPRODUCED, OPPOSITE, INCONCLUSIVE, UNTESTABLE = (
    "reproduced", "opposite", "inconclusive", "untestable")
Z = 2.0  # How many standard errors a difference must clear.
# The last part of a metric bounded by 1, e.g. eval/classification/accuracy, .../r@5.
_BOUNDED = re.compile(r"accuracy|^acc$|^r@\d+$|recall", re.I)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """A claim's paired differences (n, their mean and its standard error; None where undefined)
  and its verdict; `why` says what made it untestable or inconclusive."""
  claim: Claim
  n: int
  mean: float | None
  se: float | None
  verdict: str
  why: str = ""

  def to_json(self):
    greater, than = self.claim.sides
    return dict(text=self.claim.text, metric=self.claim.metric, greater=list(greater),
                than=list(than), paper=self.claim.paper, n=self.n, mean=self.mean, se=self.se,
                verdict=self.verdict, why=self.why)


def mean_se(diffs):
  """(mean, standard error) of paired differences: (None, None) for none, SE None for one."""
  if not diffs:
    return None, None
  if len(diffs) < 2:
    return statistics.mean(diffs), None
  return statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))


def paired(values, greater, than):
  """[d_s] over the seeds every point of `greater` and `than` has, in seed order: the mean of
  the `greater` points' values at s minus that of the `than` points'. `values` is
  {point name: {seed: value}}."""
  seeds = set.intersection(*(set(values.get(p, {})) for p in (*greater, *than)))
  return [statistics.mean(values[p][s] for p in greater)
          - statistics.mean(values[p][s] for p in than) for s in sorted(seeds)]


def _beyond(mean, se):
  return mean is not None and se is not None and mean > Z * se


def bounded(sweep, column):
  """Whether a column is bounded by 1 (all its metrics are accuracies or R@k), so that the
  sweep's ceiling applies to it."""
  return all(_BOUNDED.search(m.rsplit("/", 1)[-1]) for m in sweep.mean_of.get(column, [column]))


def judge(claim, values, baselines=(), ceiling=None):
  """The Verdict of `claim` from `values` ({point name: {seed: value of claim.metric}}, the
  baselines' records included), given the point names of the baselines that measure the
  metric and the metric's ceiling (None if it has none)."""
  greater, than = claim.sides
  n_diffs = paired(values, greater, than)
  mean, se = mean_se(n_diffs)
  why = ""
  if ceiling is not None:
    top = [(p, statistics.mean(values[p].values())) for p in (*greater, *than) if values.get(p)]
    at = [f"{p} {m:.3f}" for p, m in top if m >= ceiling]
    if at:
      why = f"at its ceiling ({', '.join(at)} >= {ceiling})"
  # A claim that names a baseline is itself the comparison with it.
  against_baseline = any(p in baselines or p.startswith(BASELINE) for p in (*greater, *than))
  if not why and baselines and not against_baseline and not any(
      all(_beyond(*mean_se(paired(values, (p,), (b,)))) for b in baselines)
      for p in (*greater, *than)):
    why = (f"no point of the claim beats every baseline ({', '.join(baselines)}) by more "
           f"than {Z:g} standard errors")
  if why:
    verdict = UNTESTABLE
  elif se is None:
    verdict, why = INCONCLUSIVE, f"{len(n_diffs)} seed(s) in common: no standard error"
  elif mean > Z * se:
    verdict = REPRODUCED
  elif mean < -Z * se:
    verdict = OPPOSITE
  else:
    verdict = INCONCLUSIVE
  return Verdict(claim, len(n_diffs), mean, se, verdict, why)


def verdicts(sweep, records):
  """[Verdict] of each of the sweep's claims, from result records (points' and baselines')."""
  values = {}  # {column: {point name: {seed: value}}}
  for record in records:
    for column, value in record_values(sweep, record).items():
      values.setdefault(column, {}).setdefault(record["point"], {})[record["seed"]] = value
  baselines = tuple(BASELINE + b for b in sweep.baselines)
  return [judge(claim, values.get(claim.metric, {}),
                baselines if measured_by_baselines(sweep, claim.metric) else (),
                sweep.ceiling if bounded(sweep, claim.metric) else None)
          for claim in sweep.claims]


def _number(mean, se, n):
  if mean is None:
    return f"no seeds (n={n})"
  return f"{mean:+.3f} ± {se:.3f} (n={n})" if se is not None else f"{mean:+.3f} (n={n})"


def claims_table(results):
  """The Claims table: each claim, the paper's number, ours and the verdict."""
  if not results:
    return ""
  lines = ["## Claims", "",
           f"Ours: the mean over seeds of the paired difference (greater - than) ± its standard "
           f"error; reproduced or opposite beyond {Z:g} standard errors (rules: "
           "mmjax/sweep/claims.py).", "",
           "| claim | metric | paper | ours | verdict |", "|---|---|---|---|---|"]
  for r in results:
    verdict = f"**{r.verdict}**" + (f": {r.why}" if r.why else "")
    lines.append(f"| {r.claim.text} | `{r.claim.metric}` | {r.claim.paper} | "
                 f"{_number(r.mean, r.se, r.n)} | {verdict} |")
  return "\n".join(lines) + "\n"


def write_verdicts(path, sweep, results):
  """PATH: the verdicts, machine-readable."""
  with atomic_open(path) as f:
    json.dump(dict(ceiling=sweep.ceiling, z=Z, claims=[r.to_json() for r in results]), f,
              indent=1)
    f.write("\n")
