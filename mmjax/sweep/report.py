"""A sweep's results: result.json of finished tasks collected into results.jsonl, a markdown
table (mean ± std over seeds, the baselines' rows after the points', then the claims and their
verdicts), the verdicts as JSON, and a plot of each metric against the swept value with the
baselines as horizontal lines."""
import json
import math
import os
import statistics

from mmjax.sweep.claims import claims_table, verdicts, write_verdicts
from mmjax.sweep.runner import RESULT, finish, stage_done
from mmjax.sweep.spec import BASELINE, columns, point_name, record_values


def collect(sweep, all_tasks, workdir, report=None, header=""):
  """result.json of finished tasks -> results.jsonl, results.md, results.verdicts.json,
  results.png (and with `report`, REPORT.jsonl, .md, .verdicts.json, .png)."""
  for task in all_tasks:
    if not task.done and all(stage_done(os.path.join(task.folder, s), task.total_steps[s])
                             for s in task.stages):
      finish(sweep, task)
  records = []
  for task in all_tasks:
    if task.done:
      with open(os.path.join(task.folder, RESULT), encoding="utf-8") as f:
        records.append(json.load(f))
  judged = verdicts(sweep, records)
  table = markdown(sweep, records, len(all_tasks), judged)
  prefixes = [os.path.join(workdir, "results")]
  if report:
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    prefixes.append(report)
  for prefix in prefixes:
    with open(prefix + ".jsonl", "w", encoding="utf-8") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    with open(prefix + ".md", "w", encoding="utf-8") as f:
      f.write(header + table)
    if sweep.claims:
      write_verdicts(prefix + ".verdicts.json", sweep, judged)
    plot(sweep, records, prefix + ".png")
  return records


def _mean_std(values):
  if not values:
    return None, None
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _row(sweep, records, name):
  """(n, {column: (mean, std)}, {column: seed values}) of one point's records (a column the
  point does not measure: (None, None) and [])."""
  mine = [record_values(sweep, r) for r in records if r["point"] == name]
  values = {c: [v[c] for v in mine if c in v] for c in columns(sweep)}
  return len(mine), {c: _mean_std(v) for c, v in values.items()}, values


def summary(sweep, records):
  """[(overrides, n, {column: (mean, std)}, {column: seed values})] in point order."""
  return [(overrides, *_row(sweep, records, point_name(overrides)))
          for overrides in sweep.points]


def baseline_summary(sweep, records):
  """[(baseline name, n, {column: (mean, std)}, {column: seed values})]: the downstream
  columns measured, the others (None, None)."""
  return [(name, *_row(sweep, records, BASELINE + name)) for name in sweep.baselines]


def _commit(commit, records):
  dirty = any(r.get("dirty") for r in records if r["commit"] == commit)
  return f"`{commit}`" + (" (with uncommitted changes)" if dirty else "")


def markdown(sweep, records, total, judged=None):
  """The results table (a row per point, then per baseline) and, if the sweep has claims, the
  Claims table of `judged` (the claims' verdicts, computed from `records` if not given)."""
  cols = columns(sweep)
  keys = list(dict.fromkeys(k for p in sweep.points for k in p)) or ["point"]
  commits = sorted({r["commit"] for r in records})
  lines = [f"{len(records)} of {total} point x seed runs done, at commit "
           f"{', '.join(_commit(c, records) for c in commits)}; mean ± std over seeds (every "
           "seed's value in the `.jsonl` beside this table).", "",
           "| " + " | ".join(keys + ["seeds"] + cols) + " |",
           "|" + "---|" * (len(keys) + 1 + len(cols))]
  rows = [([str(o.get(k, "")) for k in keys], n, stats)
          for o, n, stats, _ in summary(sweep, records)]
  rows += [([f"baseline: {name}"] + [""] * (len(keys) - 1), n, stats)
           for name, n, stats, _ in baseline_summary(sweep, records)]
  for cells, n, stats in rows:
    cells = cells + [str(n)] + [f"{m:.3f} ± {s:.3f}" if m is not None else "" for m, s in
                                (stats[c] for c in cols)]
    lines.append("| " + " | ".join(cells) + " |")
  if sweep.claims:
    judged = verdicts(sweep, records) if judged is None else judged
    lines += ["", claims_table(judged).rstrip("\n")]
  return "\n".join(lines) + "\n"


def plot(sweep, records, path):
  """One panel per metric: mean against the swept value, std error bars, a line per series;
  each baseline that measures the metric a dashed horizontal line (its mean) with a band of
  ± std."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = columns(sweep)
  cols = min(3, len(panels))
  rows_n = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
  rows = summary(sweep, records)
  series = list(dict.fromkeys(o.get(sweep.series, "") for o, *_ in rows))
  xs_all = list(dict.fromkeys(o.get(sweep.x) for o, *_ in rows))
  numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
  baselines = baseline_summary(sweep, records)
  for ax, column in zip(axes.flat, panels):
    for s in series:
      pts = [(o.get(sweep.x), stats[column]) for o, _, stats, _ in rows
             if o.get(sweep.series, "") == s and stats[column][0] is not None]
      if not pts:
        continue
      xs = [x if numeric else xs_all.index(x) for x, _ in pts]
      ax.errorbar(xs, [m for _, (m, _) in pts], yerr=[sd for _, (_, sd) in pts], marker="o",
                  capsize=3, label=f"{sweep.series.split('.')[-1]}={s}" if sweep.series else None)
    for i, (name, _, stats, _) in enumerate(baselines):
      mean, std = stats[column]
      if mean is not None:  # A baseline has no swept value: a line across the panel.
        color = f"C{7 + i % 3}"
        ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=f"baseline: {name}")
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
    if not numeric:
      ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all], rotation=20)
    if numeric and sweep.x.endswith("batch_size"):
      ax.set_xscale("log", base=2)
    ax.set_title(column, fontsize=8)
    ax.set_xlabel(sweep.x.split(".")[-1] if numeric else sweep.x)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
