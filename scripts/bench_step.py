r"""Step benchmark: the real train step, compiled and timed, per model size and dtype; with
--compare=REV the same cases at another git revision, with --compare_xla_flags=FLAGS with
added XLA flags, and with --compare_set=KEY=VALUE,... with config overrides (e.g.
model.scan_layers=True), all interleaved step by step.

  .venv/bin/python scripts/bench_step.py --config=configs/pretrain_digits.py \
      --sizes=tiny,S --dtypes=float32 --compare=f7bbee0

Each case (revision x size x dtype) runs in a worker process of its own, started with the
revision's code (a `git worktree` of REV under /tmp for --compare) and the same config, batch
and data: the first batch of the config's training loader, with the rows the trainer adds.
The worker builds the step exactly as mmjax/train/trainer.py does (abstract_model,
param_shardings, initial_state, jit_train_step with donation) and compiles it ahead of time
(compile seconds; memory from the compiled program). Then --warmup untimed steps, then
--steps rounds: in each round every worker runs one step in turn (order rotated each round)
while the others wait idle, so all cases see the same machine state. A step is timed until its
outputs are ready. Reported per case: median step seconds, examples/s, TFLOP/s per device and
MFU (executed matmul FLOPs of the traced step over the device's peak, mmjax/train/mfu.py;
and useful: the step's train/useful_flops, real visible tokens only),
compile seconds, bytes per device (arguments + outputs - aliased + temporaries). With
--compare, the ratio of the revision's median step time to this checkout's (>1: this checkout
is faster). One JSON line per case goes to --json_out; --out gets a Markdown table (with the
command, machine and revisions).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config(root, spec):
  """get_config(arg) of `spec` ('configs/x.py:arg') from the checkout at `root`."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", os.path.join(root, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def _apply_overrides(config, overrides):
  """Sets 'a.b=value,c=value' on the config (values as Python literals, else strings)."""
  import ast  # pylint: disable=g-import-not-at-top
  for item in filter(None, overrides.split(",")):
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value


# -- Worker: one case, in the code of the revision whose checkout is the working directory. ---

def build_step(config):
  """(jitted step, state, batch, mesh, rules) for `config`, built as mmjax/train/trainer.py
  builds them, with the first batch of the config's training loader (in the code of the
  checkout on sys.path)."""
  from mmjax.data import loader  # pylint: disable=g-import-not-at-top
  from mmjax.models import sizes  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from mmjax.train import optimizer, trainer  # pylint: disable=g-import-not-at-top

  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.parallel.rules)
  info = loader.prepare(config.data)
  host = next(iter(loader.train_loader(config.data, info, global_batch_size=config.batch_size,
                                       seed=config.seed)))
  tx, lr_schedule = optimizer.make(config.optimizer, config.total_steps,
                                   depth=sizes.of(config.model).depth)
  graphdef, abstract_state = trainer.abstract_model(config, info, tx)
  shardings = sharding.param_shardings(abstract_state, mesh, rules)
  state = trainer.initial_state(config, info, tx, shardings)
  step_fn = trainer.jit_train_step(config, info, mesh, tx, lr_schedule, graphdef, shardings)
  batch = mesh_lib.host_to_global(trainer.with_rows(host, config.batch_size), mesh,
                                  mesh_lib.batch_axes(config.parallel.rules))
  return step_fn, state, batch, mesh, rules


def worker(args):
  sys.path.insert(0, os.getcwd())
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top

  config = _load_config(os.getcwd(), args.config)
  config.model.size, config.model.dtype = args.size, args.dtype
  _apply_overrides(config, args.set)
  if args.batch:
    config.batch_size = args.batch
  if args.data_dir:
    config.data.dir = args.data_dir
  step_fn, state, batch, mesh, rules = build_step(config)

  with sharding.use(mesh, rules):
    start = time.perf_counter()
    traced = step_fn.trace(state, batch)
    compiled = traced.lower().compile()
    compile_s = time.perf_counter() - start
  from mmjax.train import mfu  # pylint: disable=g-import-not-at-top
  flops = mfu.matmul_flops(traced.jaxpr) / mesh.size
  memory = compiled.memory_analysis()
  peak_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                - memory.alias_size_in_bytes + memory.temp_size_in_bytes)

  metrics = {}

  def run(n):
    nonlocal state, metrics
    times = []
    for _ in range(n):
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
    return times

  run(args.warmup)
  useful = metrics["train/useful_flops"]
  print(json.dumps(dict(ready=True, flops_per_device=flops, compile_s=compile_s,
                        useful_flops_per_device=float(useful) / mesh.size,
                        bytes_per_device=int(peak_bytes), devices=mesh.size,
                        device_kind=jax.devices()[0].device_kind,
                        num_params=int(sum(x.size for x in jax.tree.leaves(state["params"]))))),
        flush=True)
  for line in sys.stdin:  # "run N": N timed steps.
    n = int(line.split()[1])
    print(json.dumps(dict(times=run(n))), flush=True)


# -- Driver. -----------------------------------------------------------------------------------

class Case:
  """A worker process for one (revision, size, dtype)."""

  def __init__(self, rev, checkout, args, size, dtype, xla_flags="", overrides=""):
    self.rev, self.size, self.dtype, self.times = rev, size, dtype, []
    env = os.environ.copy()
    if xla_flags:
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"--config={args.config}",
               f"--size={size}", f"--dtype={dtype}", f"--warmup={args.warmup}",
               f"--batch={args.batch}", f"--data_dir={args.data_dir}", f"--set={overrides}"]
    self.proc = subprocess.Popen(command, cwd=checkout, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
    self.info = self._read()

  def _read(self):
    for line in self.proc.stdout:
      if line.startswith("{"):
        return json.loads(line)
    raise RuntimeError(f"The worker for {self.rev} {self.size} {self.dtype} died "
                       f"(exit {self.proc.wait()}); its stderr is above.")

  def step(self):
    self.proc.stdin.write("run 1\n")
    self.proc.stdin.flush()
    self.times += self._read()["times"]

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()

  def result(self, batch_size, peak_flops):
    step_s = statistics.median(self.times)
    tflops = self.info["flops_per_device"] / step_s / 1e12
    useful = self.info.get("useful_flops_per_device")
    return dict(rev=self.rev, size=self.size, dtype=self.dtype, step_s=step_s,
                examples_per_s=batch_size / step_s, tflops_per_device=tflops,
                mfu=tflops * 1e12 / peak_flops if peak_flops else None,
                mfu_useful=useful / step_s / peak_flops if peak_flops and useful else None,
                steps=len(self.times), **{k: v for k, v in self.info.items() if k != "ready"})


def _worktree(rev):
  """A checkout of `rev` under /tmp (made once, reused), and the full commit id."""
  commit = subprocess.check_output(["git", "rev-parse", rev], cwd=REPO, text=True).strip()
  path = os.path.join("/tmp", f"mmjax_bench_{commit[:10]}")
  if not os.path.isdir(path):
    subprocess.check_call(["git", "worktree", "add", "--detach", path, commit], cwd=REPO)
  return commit, path


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/pretrain_digits.py")
  p.add_argument("--sizes", default="tiny")
  p.add_argument("--dtypes", default="float32")
  p.add_argument("--batch", type=int, default=0, help="global batch (0: the config's)")
  p.add_argument("--steps", type=int, default=10, help="timed rounds")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--compare", default="", help="a git revision to run the same cases at")
  p.add_argument("--compare_xla_flags", default="",
                 help="XLA flags to run the same cases with too (this checkout, added flags)")
  p.add_argument("--data_dir", default="", help="data.dir (default: the config's)")
  p.add_argument("--json_out", default="docs/bench_step.jsonl")
  p.add_argument("--out", default="docs/performance.md")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--compare_set", default="",
                 help="config overrides to run the same cases with too, e.g. "
                 "model.scan_layers=True (this checkout)")
  p.add_argument("--set", default="", help=argparse.SUPPRESS)
  p.add_argument("--size", help=argparse.SUPPRESS)
  p.add_argument("--dtype", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    return worker(args)

  sys.path.insert(0, REPO)
  from mmjax.train import mfu  # pylint: disable=g-import-not-at-top
  head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO, text=True).strip()
  dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO, check=False).returncode
  revs = [(head[:10] + ("+changes" if dirty else ""), REPO, "", "")]
  if args.compare:
    commit, path = _worktree(args.compare)
    revs.append((commit[:10], path, "", ""))
  if args.compare_xla_flags:
    revs.append((f"{revs[0][0]} {args.compare_xla_flags}", REPO, args.compare_xla_flags, ""))
  if args.compare_set:
    revs.append((f"{revs[0][0]} {args.compare_set}", REPO, "", args.compare_set))
  cases = []
  for size in args.sizes.split(","):
    for dtype in args.dtypes.split(","):
      for rev, checkout, xla_flags, overrides in revs:
        print(f"Compiling {rev} size={size} dtype={dtype} ...", flush=True)
        cases.append(Case(rev, checkout, args, size, dtype, xla_flags, overrides))
  try:
    for r in range(args.steps):
      for case in cases[r % len(cases):] + cases[:r % len(cases)]:
        case.step()
      print(f"round {r + 1}/{args.steps}: " + ", ".join(
          f"{c.rev} {c.size} {c.dtype} {c.times[-1]:.3f}s" for c in cases), flush=True)
  finally:
    for case in cases:
      case.close()

  import jax  # pylint: disable=g-import-not-at-top
  config_batch = args.batch or _load_config(REPO, args.config).batch_size
  rows = []
  for case in cases:
    peak, source = mfu.peak_flops_per_device(case.dtype, jax.devices()[0])
    peak = peak * jax.local_device_count() / case.info["devices"] if peak else None
    rows.append(case.result(config_batch, peak) | {"peak_source": source})
  if len(revs) > 1:
    by_case = {(r["size"], r["dtype"]): r for r in rows if r["rev"] == revs[0][0]}
    for r in rows:
      if r["rev"] != revs[0][0]:
        r["ratio_to_head"] = r["step_s"] / by_case[(r["size"], r["dtype"])]["step_s"]

  command = "python scripts/bench_step.py " + " ".join(sys.argv[1:])
  machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {jax.devices()[0].device_kind}"
  with open(os.path.join(REPO, args.json_out), "a", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r | {"command": command, "machine": machine,
                              "date": time.strftime("%Y-%m-%d %H:%M")}) + "\n")
  lines = [f"Command: `{command}`", "", f"Machine: {machine}. {args.steps} interleaved rounds "
           f"after {args.warmup} warm-up steps; median step. MFU against {rows[0]['peak_source']}.",
           "", "| rev | size | dtype | step s | ex/s | TFLOP/s/device | MFU | MFU useful | "
           "compile s | GiB/device | step s / this checkout's |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  fraction = lambda x: "n/a" if x is None else f"{x:.2f}"
  for r in rows:
    lines.append(
        f"| {r['rev']} | {r['size']} | {r['dtype']} | {r['step_s']:.3f} | "
        f"{r['examples_per_s']:.0f} | {r['tflops_per_device']:.4f} | {fraction(r['mfu'])} | "
        f"{fraction(r['mfu_useful'])} | {r['compile_s']:.1f} | "
        f"{r['bytes_per_device'] / 2**30:.2f} | "
        + (f"{r['ratio_to_head']:.2f}x" if "ratio_to_head" in r else "") + " |")
  report = "\n".join(lines) + "\n"
  print("\n" + report)
  if args.out:
    with open(os.path.join(REPO, args.out), "a", encoding="utf-8") as f:
      f.write("\n" + report)


if __name__ == "__main__":
  main()
