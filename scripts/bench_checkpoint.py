r"""What an asynchronous checkpoint costs the train step, at a config's checkpoint_every.

  python scripts/bench_checkpoint.py --config=configs/pretrain_digits.py --saves=4

Builds the real train step (as bench_step.py does), then --saves times: --steps steps with no
checkpoint (this save's baseline), one Orbax save of the train state exactly as the trainer
makes it (mmjax/train/checkpoint.py; asynchronous),
timing the call (the blocking part: device to host), then --steps more steps while the write
runs in the background. A save's cost is its blocking time plus what the steps after it took
beyond the steps before it (so slow drift of the machine cancels); its share of the step time
is the median cost over checkpoint_every median steps. Prints a Markdown table and appends it to --out.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_step  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/pretrain_digits.py")
  p.add_argument("--set", default="", help="config overrides, a.b=v,...")
  p.add_argument("--steps", type=int, default=30, help="steps before and after each save")
  p.add_argument("--saves", type=int, default=4)
  p.add_argument("--out", default="docs/performance.md")
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from mmjax.train import checkpoint  # pylint: disable=g-import-not-at-top
  config = bench_step._load_config(bench_step.REPO, args.config)  # pylint: disable=protected-access
  bench_step._apply_overrides(config, args.set)  # pylint: disable=protected-access
  step_fn, state, batch, mesh, rules = bench_step.build_step(config)

  def steps(n):
    nonlocal state
    times = []
    for _ in range(n):
      start = time.perf_counter()
      with sharding.use(mesh, rules):
        state, metrics = step_fn(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
    return times

  steps(3)  # Compile and warm up.
  rows, before_all = [], []
  with tempfile.TemporaryDirectory() as workdir:
    mngr = checkpoint.manager(workdir, keep=2, every=1)
    for i in range(args.saves):
      before = steps(args.steps)  # This save's baseline: the steps just before it.
      start = time.perf_counter()
      checkpoint.save(mngr, i + 1, state, force=True)
      blocking = time.perf_counter() - start
      after = steps(args.steps)
      mngr.wait_until_finished()
      before_all += before
      rows.append((blocking, sum(after) - sum(before), blocking + sum(after) - sum(before)))
      print(f"save {i + 1}: blocking {blocking:.3f} s, the {args.steps} steps after it "
            f"{sum(after):.2f} s, the {args.steps} before {sum(before):.2f} s", flush=True)
    mngr.close()
  baseline = statistics.median(before_all)

  every = config.checkpoint_every
  cost = statistics.median(r[2] for r in rows)
  lines = [f"Command: `python scripts/bench_checkpoint.py {' '.join(sys.argv[1:])}`", "",
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
           f"{jax.devices()[0].device_kind}. Median step {baseline:.3f} s without a save in flight; "
           f"{args.saves} saves, each between {args.steps} steps and {args.steps} more.", "",
           "| save | blocking s | steps after it minus steps before s | cost s |",
           "|---|---|---|---|"]
  lines += [f"| {i + 1} | {b:.3f} | {e:.3f} | {c:.3f} |" for i, (b, e, c) in enumerate(rows)]
  lines += ["", f"Median cost per save {cost:.3f} s = **{100 * cost / (every * baseline):.2f} %** "
            f"of the step time at checkpoint_every={every} ({every} x {baseline:.3f} s)."]
  report = "\n".join(lines) + "\n"
  print("\n" + report)
  if args.out:
    with open(os.path.join(bench_step.REPO, args.out), "a", encoding="utf-8") as f:
      f.write("\n" + report)


if __name__ == "__main__":
  main()
