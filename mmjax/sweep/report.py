"""A sweep's results: result.json of finished tasks collected into results.jsonl, a markdown
table (mean ± std over seeds) and a plot of each metric against the swept value."""
import json
import math
import os
import statistics

from mmjax.sweep.runner import RESULT, finish, stage_done
from mmjax.sweep.spec import point_name


def collect(sweep, all_tasks, workdir, report=None, header=""):
  """result.json of finished tasks -> results.jsonl, results.md, results.png."""
  for task in all_tasks:
    if not task.done and all(stage_done(os.path.join(task.folder, s), task.total_steps[s])
                             for s in task.stages):
      finish(sweep, task)
  records = []
  for task in all_tasks:
    if task.done:
      with open(os.path.join(task.folder, RESULT), encoding="utf-8") as f:
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
