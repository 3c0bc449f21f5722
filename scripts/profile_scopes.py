r"""Where a profiled train step's time goes, by the model's named scopes.

  python main.py --config=configs/pretrain_digits.py --workdir=/tmp/prof \
      --config.total_steps=8 --config.profile.steps=5:7
  python scripts/profile_scopes.py --config=configs/pretrain_digits.py --trace=/tmp/prof/tensorboard

Sums the durations of the train step's XLA op events in the newest `*.trace.json.gz` under
--trace by named scope (tokenize_<modality>, encoder, decoder, objective_<name>, optimizer;
'other' for the rest) and by pass (forward, or backward: ops under a `transpose(...)`), and
lists the costliest op kinds within the top scope. A trace names each op, not its scope: the
scope comes from the op's metadata in the compiled step, so the script compiles the same step
again (same config and --set overrides as the profiled run, the config's first batch).
Shares are of the summed op time (the CPU runs ops on several threads at once).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_step  # pylint: disable=g-import-not-at-top,wrong-import-position

SCOPES = ("tokenize_image", "tokenize_text", "tokenize_audio", "encoder", "decoder",
          "objective_contrastive", "objective_masked_image", "objective_masked_text",
          "objective_masked_audio", "optimizer")


def op_scopes(hlo_text):
  """{HLO instruction name: (scope, 'forward' | 'backward')} from a compiled module's text."""
  scopes = {}
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"', line)
    if not m:
      continue
    parts = [re.sub(r"^(?:transpose\(|jvp\(|vmap\()+|\)+$", "", c) for c in m.group(2).split("/")]
    scope = next((s for s in SCOPES if s in parts), "other")
    scopes[m.group(1)] = (scope, "backward" if "transpose(" in m.group(2) else "forward")
  return scopes


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/pretrain_digits.py")
  p.add_argument("--set", default="", help="the profiled run's config overrides, a.b=v,...")
  p.add_argument("--trace", required=True, help="a folder holding the run's *.trace.json.gz")
  args = p.parse_args()
  traces = sorted(glob.glob(os.path.join(args.trace, "**", "*.trace.json.gz"), recursive=True))
  if not traces:
    sys.exit(f"No *.trace.json.gz under {args.trace}: run with --config.profile.steps=A:B.")

  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  config = bench_step._load_config(bench_step.REPO, args.config)  # pylint: disable=protected-access
  bench_step._apply_overrides(config, args.set)  # pylint: disable=protected-access
  step_fn, state, batch, mesh, rules = bench_step.build_step(config)
  with sharding.use(mesh, rules):
    scopes = op_scopes(step_fn.lower(state, batch).compile().as_text())

  by_scope, by_kind, total = collections.Counter(), collections.Counter(), 0.0
  with gzip.open(traces[-1]) as f:
    events = json.load(f)["traceEvents"]
  for e in events:
    a = e.get("args", {})
    if "train_step" not in a.get("hlo_module", "") or "hlo_op" not in a:
      continue
    scope, direction = scopes.get(a["hlo_op"], ("other", "forward"))
    by_scope[(scope, direction)] += e["dur"]
    by_kind[(scope, re.sub(r"\.\d+$", "", a["hlo_op"]))] += e["dur"]
    total += e["dur"]
  if not total:
    sys.exit(f"{traces[-1]} has no op of the train step.")
  print(f"{traces[-1]}: {total / 1e6:.2f} s of train-step op time\n")
  print("| share | scope | pass |\n|---|---|---|")
  for (scope, direction), t in by_scope.most_common():
    print(f"| {100 * t / total:.1f} % | {scope} | {direction} |")
  top = by_scope.most_common(1)[0][0][0]
  print(f"\n| share | op kind in {top} |\n|---|---|")
  for (scope, kind), t in by_kind.most_common():
    if scope == top and t / total >= 0.005:
      print(f"| {100 * t / total:.1f} % | `{kind}` |")


if __name__ == "__main__":
  main()
