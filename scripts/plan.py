r"""Will it fit? Per-device memory and FLOPs of the real train step, compiled ahead of time on
a fake mesh of CPU devices: no accelerator, no dataset, nothing allocated.

One config on one or more meshes (default: the config's own mesh):

  .venv/bin/python scripts/plan.py --config=configs/pretrain_digits.py:size=L,strategy=fsdp \
      --config.model.dtype=bfloat16 --config.model.scan_layers=True --config.model.remat=full \
      --config.batch_size=2048 --devices=64 --mesh=fsdp=64 --mesh=fsdp=32,tensor=2

prints, per mesh: parameters and optimizer state per device (exact, from their shardings),
XLA's argument / output / temporary sizes and their peak, and matmul TFLOPs per device and step.
Inputs default to pretraining shapes, not the 8x8 demo digits: 224x224x3 images in 16x16
patches, 64 text tokens of a 32000 vocab, 10 s of 16 kHz audio as 128-band log-mel patches
(--image_size, --text_len, --vocab_size, --audio_seconds, --sample_rate change them).

docs/scaling.md (sizes S/B/L/H x the three strategies on 8 devices, L/H on 64, and the
contrastive memory series) is this script's output, regenerated whole by

  .venv/bin/python scripts/plan.py --out=docs/scaling.md

(8-13 minutes on 2 CPU cores, depending on what else runs: one process per device count,
a 20-50 s compile per row).

The numbers are the XLA CPU compiler's for one device's program; TPU and GPU compilers fuse
and schedule differently, so treat temporaries as an estimate (docs/scaling.md says more).
"""
import os
import sys


def _flag_value(argv, name, default):
  """The last --name=value or --name value in argv (absl keeps the last one too), read
  before absl runs."""
  value = default
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


# Before JAX starts a backend: CPU only (even on a GPU host, the mesh is fake) with --devices
# of them. The planner never runs the compiled code, so LLVM need not optimize it: that halves
# compile time and changes none of the numbers (memory is assigned before code generation).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""),
    f"--xla_force_host_platform_device_count={int(_flag_value(sys.argv, 'devices', 8))}",
    "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mmjax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/pretrain_digits.py", "Training config, e.g. "
    "configs/pretrain_digits.py:size=L,strategy=fsdp; --config.a.b=v overrides apply.",
    lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices (the mesh's size).")
_MESH = flags.DEFINE_multi_string(
    "mesh", [], "A mesh to plan for, e.g. data=8 or fsdp=4,tensor=2 (repeatable); default: "
    "the config's mesh. What is split over each axis is the config's rules say (its "
    "strategy=...), as in training.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square RGB images of this many pixels.")
_IMAGE_PATCH = flags.DEFINE_integer("image_patch", 16, "config.model.image.patch_size.")
_TEXT_LEN = flags.DEFINE_integer("text_len", 64, "Text tokens per example.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 32000, "Word-piece vocabulary size.")
_AUDIO_SECONDS = flags.DEFINE_float("audio_seconds", 10.0, "Audio clip length in seconds.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000, "Audio sample rate in Hz.")
_OUT = flags.DEFINE_string(
    "out", None, "Write the scaling report (the grid below, all of --config's other settings "
    "kept) to this markdown file, e.g. docs/scaling.md, instead of planning one config.")
_SIZES = flags.DEFINE_list("sizes", ["S", "B", "L", "H"], "--out: model sizes.")
_DEVICE_COUNTS = flags.DEFINE_list("device_counts", ["8", "64"], "--out: fake pod sizes.")
_POD_SIZES = flags.DEFINE_list(
    "pod_sizes", ["L", "H"], "--out: the sizes also planned on the device counts after the "
    "first (at a fixed per-device batch, the others' per-device numbers hardly change).")
_PER_DEVICE_BATCH = flags.DEFINE_integer(
    "per_device_batch", 32, "--out: examples per device (global batch = this x devices).")
_ROWS_JSON = flags.DEFINE_string(
    "rows_json", None, "Internal (--out runs itself once per device count): plan the grid's "
    "rows for --devices and write them to this JSON file.")

# --out: the strategies' meshes for n devices (configs/common.py), written out in the table.
_STRATEGIES = ("data_parallel", "fsdp", "fsdp_tensor")
_LARGE = ("L", "H")  # Sizes that rematerialize every block ('full').
# --out: contrastive temporaries on 8 devices as the global batch grows.
_CONTRASTIVE_BATCHES = (1024, 4096, 16384, 65536)
_GIB = 2 ** 30


def _parse_mesh(text):
  """'fsdp=4,tensor=2' -> {'fsdp': 4, 'tensor': 2}."""
  mesh = {}
  for part in filter(None, text.split(",")):
    axis, eq, size = part.partition("=")
    if not eq or not size.strip().lstrip("-").isdigit():
      raise UserError(f"--mesh={text!r}: use axis=size pairs, e.g. --mesh=fsdp=4,tensor=2.")
    mesh[axis.strip()] = int(size)
  return mesh


def _mesh_name(mesh):
  return ",".join(f"{a}={s}" for a, s in mesh.shape.items() if s > 1) or "1 device"


def _dataset_info():
  from mmjax.train import planner  # pylint: disable=g-import-not-at-top
  return planner.dataset_info(
      image_shape=(_IMAGE_SIZE.value, _IMAGE_SIZE.value, 3), text_len=_TEXT_LEN.value,
      vocab_size=_VOCAB_SIZE.value, audio_seconds=_AUDIO_SECONDS.value,
      sample_rate=_SAMPLE_RATE.value)


def _plan_row(config, info, mesh_cfg, keep_going=False):
  """Plans one config on one mesh: a row of numbers for the tables. With keep_going, a failure
  becomes the row's 'error' (one bad row of a report must not lose the others)."""
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from mmjax.train import planner  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(mesh_cfg)
  row = {"size": config.model.size, "mesh": _mesh_name(mesh), "batch": config.batch_size,
         "dtype": config.model.dtype, "scan": config.model.scan_layers,
         "remat": config.model.remat}
  try:
    row |= planner.plan(planner.with_inputs(config, image_patch=_IMAGE_PATCH.value), info, mesh)
  except Exception as e:  # pylint: disable=broad-except
    if not keep_going:
      raise
    logging.exception("Planning %s on %s failed.", config.model.size, row["mesh"])
    row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
  return row


def _tflop(flops):
  tflop = flops / 1e12
  return f"{tflop:.0f}" if tflop >= 100 else f"{tflop:.1f}" if tflop >= 1 else f"{tflop:.3f}"


def _gib(n):
  return f"{n / _GIB:.2f}" if n >= 0.1 * _GIB else f"{n / _GIB:.3f}"


def _table(rows, strategy_column):
  """Markdown table of plan rows (sizes in GiB per device, FLOPs per device and step)."""
  head = (["size", "params"] + (["strategy"] if strategy_column else []) +
          ["mesh", "batch", "params GiB", "opt state GiB", "arguments GiB", "temp GiB",
           "peak GiB", "TFLOP/step"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["size"], f"{r['num_params'] / 1e6:.0f}M" if "num_params" in r else ""]
    cells += [r["strategy"]] if strategy_column else []
    cells += [f"`{r['mesh']}`", str(r["batch"])]
    if "error" in r:
      cells += [f"failed: {r['error']}"] + [""] * 6
    else:
      cells += [_gib(r[k]) for k in ("params", "opt_state", "argument", "temp", "peak")]
      cells += [_tflop(r["flops"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# One config.

def plan_one():
  """Plans --config on each --mesh (or its own) and prints a table."""
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  meshes = [_parse_mesh(m) for m in _MESH.value] or [dict(config.mesh)]
  info = _dataset_info()
  rows = []
  for mesh_cfg in meshes:
    try:  # A clear error before compiling.
      mesh_lib.resolve_mesh_shape(mesh_cfg, _DEVICES.value)
    except UserError as e:
      raise UserError(f"{e} Plan on another number of fake devices with --devices=N.") from e
    row = _plan_row(config, info, mesh_cfg) | {"strategy": ""}
    rows.append(row)
    print(f"{row['size']} on {row['mesh']} (global batch {row['batch']}, {row['dtype']}, "
          f"scan_layers={row['scan']}, remat={row['remat']}): {row['num_params'] / 1e6:.1f}M "
          f"parameters; per device: params {_gib(row['params'])} GiB, optimizer state "
          f"{_gib(row['opt_state'])} GiB, arguments {_gib(row['argument'])} GiB, outputs "
          f"{_gib(row['output'])} GiB ({_gib(row['alias'])} reusing donated arguments), "
          f"temporaries {_gib(row['temp'])} GiB, generated code "
          f"{row['generated_code'] / 2**20:.1f} MiB; peak {_gib(row['peak'])} GiB; "
          f"{row['flops'] / 1e12:.2f} matmul TFLOP/step (XLA's cost analysis: "
          + (f"{row['xla_flops'] / 1e12:.2f}" if row["xla_flops"] else "none") +
          f"); compiled in {row['compile_s']:.0f} s.")
  print()
  print(_table(rows, strategy_column=False))


# ----------------------------------------------------------------------------------------------
# The scaling report.

def _load_config(spec, strategy_size_arg):
  """get_config() of the config file in `spec` ('path[:args]'), with more args appended."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_planned_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(",".join(filter(None, [arg, strategy_size_arg])))


def _grid_config(size, strategy, devices):
  """The report's config for one row: --config's file, args and overrides, then the grid's
  size, strategy, batch and memory settings."""
  flag = flags.FLAGS["config"]
  config = _load_config(config_flags.get_config_filename(flag),
                        f"size={size},strategy={strategy}")
  overrides = config_flags.get_override_values(flag)
  if overrides:
    config.update_from_flattened_dict(overrides)
  config.batch_size = _PER_DEVICE_BATCH.value * devices
  config.model.dtype = "bfloat16"
  config.model.scan_layers = True
  config.model.remat = "full" if size in _LARGE else "none"
  return config


def grid_rows(devices):
  """The (size, strategy) rows for `devices`; on 8 devices also the contrastive series and
  the smallest size in float32 (how the CPU compiler treats bfloat16)."""
  from scripts import contrastive_memory  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  info = _dataset_info()
  out = {"rows": [], "contrastive": None, "float32": None}
  first = devices == int(_DEVICE_COUNTS.value[0])
  for size in (s for s in _SIZES.value if first or s in _POD_SIZES.value):
    for strategy in _STRATEGIES:
      config = _grid_config(size, strategy, devices)
      start = time.perf_counter()
      row = _plan_row(config, info, dict(config.mesh), keep_going=True) | {"strategy": strategy}
      out["rows"].append(row)
      print(f"[{devices} devices] {size} {strategy} on {row['mesh']}: " +
            (f"peak {_gib(row['peak'])} GiB, {_tflop(row['flops'])} TFLOP/step"
             if "error" not in row else row["error"]) +
            f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
  if devices == 8:
    config = _grid_config(_SIZES.value[0], "fsdp", devices)
    config.model.dtype = "float32"
    out["float32"] = _plan_row(config, info, dict(config.mesh), keep_going=True)
    config = _grid_config(_SIZES.value[0], "data_parallel", devices)
    mesh = mesh_lib.make_mesh({"data": devices})
    out["contrastive"] = {
        "kind": config.objectives.contrastive.type, "embed_dim": config.model.embed_dim,
        "batches": list(_CONTRASTIVE_BATCHES),
        "series": contrastive_memory.temp_memory_series(
            config.objectives.contrastive.type, _CONTRASTIVE_BATCHES, mesh,
            embed_dim=config.model.embed_dim)}
  return out


def _command():
  """The command that regenerates the report, as given (minus this script's internals)."""
  args = [a for a in sys.argv[1:] if not a.startswith(("--rows_json", "--devices"))]
  return " ".join([".venv/bin/python scripts/plan.py"] + args)


def _report(results, seconds):
  """The whole of docs/scaling.md."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.train import planner  # pylint: disable=g-import-not-at-top
  info = _dataset_info()
  audio = planner.AUDIO
  frames = 1 + (info.size('audio') - audio["n_fft"]) // audio["hop"]
  audio_tokens = frames // audio["patch_time"] * (audio["n_mels"] // audio["patch_freq"])
  image_tokens = (_IMAGE_SIZE.value // _IMAGE_PATCH.value) ** 2
  large = "/".join(s for s in _SIZES.value if s in _LARGE) or "none"
  small = "/".join(s for s in _SIZES.value if s not in _LARGE) or "none"
  out = [
      "# Scaling: memory and FLOPs per device, before launching",
      "",
      "Written by the planner; do not edit by hand. Regenerate the whole file with",
      "",
      "```bash",
      _command(),
      "```",
      "",
      f"(last run: {datetime.date.today().isoformat()}, JAX {jax.__version__}, "
      f"{seconds / 60:.1f} minutes on a 2-core CPU machine).",
      "",
      "Each row is the real train step (`mmjax.train.trainer.jit_train_step`: masked image, "
      "text and audio modeling plus contrastive alignment of every pair, AdamW update) traced "
      "with abstract inputs and compiled ahead of time by XLA for a mesh of fake CPU devices "
      "(`mmjax/train/planner.py`). Nothing is allocated and no data is read. Plan your own "
      "config and mesh with `scripts/plan.py --config=... --devices=N --mesh=...` (its "
      "docstring has an example).",
      "",
      "## What the numbers are",
      "",
      "- **Per device**, in GiB (2^30 bytes). *params* and *opt state* (AdamW's two moments) "
      "are exact: the bytes of each array's shard under the strategy's sharding rules, float32. "
      "Small leaves (norm scales, biases of axes that are not split, scalars) stay replicated, "
      "so FSDP is a little above 1/devices.",
      "- *arguments* (train state and batch shard), *temp* (activations, gradients, "
      "all-gathered weights and everything else the step needs while it runs) and *peak* = "
      "arguments + outputs - donated outputs + temp are the **XLA CPU compiler's** "
      "`compiled.memory_analysis()` of one device's program. The TPU and GPU compilers fuse, "
      "schedule and rematerialize differently, so read temp as an estimate, good for orders "
      "of magnitude and for comparing rows, not to the last GiB. For comparison: an H100 has "
      "80 GiB of HBM, of which JAX preallocates 75% by default "
      "(`XLA_PYTHON_CLIENT_MEM_FRACTION` changes it); a TPU v5e chip has 16 GiB, a v5p 95 GiB.",
      "- *TFLOP/step*: matrix-multiplication FLOPs of one step (forward, backward and "
      "rematerialized forward), counted in the traced program with every scanned layer "
      "counted, divided by the devices. That is exact where the devices split all the work; "
      "under fsdp_tensor both tensor partners do what the rules do not split over `tensor` "
      "(patch embeddings, norms, the losses), so those rows are a little low. XLA's own "
      "`cost_analysis()` counts a loop body once, so with `scan_layers` it is far too low; "
      "`scripts/plan.py` prints both. Divide by a "
      "chip's bf16 peak (989 TFLOP/s dense on H100, 197 on v5e) and a utilization (40-50% "
      "is good) for seconds per step.",
      "- Meshes are the strategies' (`configs/common.py`): `data_parallel` all devices on "
      "`data`, `fsdp` all on `fsdp`, `fsdp_tensor` `tensor=2` and the rest on `fsdp`. The "
      "batch is split over data x fsdp, so under fsdp_tensor a device works on twice the "
      "rows of the others, shared with its tensor partner.",
      "",
      "## Settings",
      "",
      f"- Config: `{config_flags.get_config_filename(flags.FLAGS['config'])}` with "
      "`size=...,strategy=...`; every other setting as the config has it (fusion "
      "'separate', contrastive view 'clean' with `impl='dense'`, AdamW, "
      "`grad_accum_steps=1`).",
      f"- Global batch: {_PER_DEVICE_BATCH.value} examples per device "
      f"({', '.join(f'{_PER_DEVICE_BATCH.value * int(n)} on {n}' for n in _DEVICE_COUNTS.value)}"
      " devices).",
      f"- bfloat16 compute (`model.dtype`), float32 parameters and optimizer state, "
      f"`scan_layers=True` for every size; `remat='full'` (each block keeps only its input) "
      f"for {large}, none for {small}.",
      f"- Inputs per example: a {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x3 image in "
      f"{_IMAGE_PATCH.value}x{_IMAGE_PATCH.value} patches ({image_tokens} tokens), "
      f"{info.size('text')} text tokens of a {info.vocab_size}-word vocabulary, "
      f"{_AUDIO_SECONDS.value:g} s of {info.sample_rate} Hz audio as a log-mel spectrogram "
      f"(n_fft {audio['n_fft']}, hop {audio['hop']}, {audio['n_mels']} mels) in "
      f"{audio['patch_time']}x{audio['patch_freq']} patches ({audio_tokens} tokens).",
  ]
  for i, (n, result) in enumerate(results.items()):
    out += ["", f"## {n} devices, global batch {_PER_DEVICE_BATCH.value * n}", ""]
    if i:
      sizes = [s for s in _SIZES.value if any(r["size"] == s for r in result["rows"])]
      out += [f"Sizes {'/'.join(sizes)} only, to keep "
              "the report's compile time down (`--pod_sizes`): at a fixed per-device batch the "
              "others' numbers hardly change with the number of devices (activations "
              "dominate; a full run had S and B within 1% of the 8-device rows).", ""]
    out += [_table(result["rows"], strategy_column=True)]
  float32 = next((r["float32"] for r in results.values() if r.get("float32")), None)
  if float32 and "error" not in float32:
    bf16 = next((r for r in results[8]["rows"] if r["size"] == float32["size"]
                 and r["strategy"] == "fsdp" and "error" not in r), None)
    if bf16:
      out += [
          "", "## bfloat16 on the CPU compiler", "",
          f"The same {float32['size']} row in float32 and in bfloat16 (`fsdp=8`, global batch "
          f"{float32['batch']}, remat {float32['remat']}):", "",
          "| model.dtype | temp GiB | peak GiB |", "|---|---|---|",
          f"| float32 | {_gib(float32['temp'])} | {_gib(float32['peak'])} |",
          f"| bfloat16 | {_gib(bf16['temp'])} | {_gib(bf16['peak'])} |", "",
          "On XLA's CPU backend the temporaries come out no smaller in bfloat16 than in "
          "float32 (it upcasts much of the bfloat16 arithmetic to float32), where TPU and GPU "
          "compilers keep bfloat16 activations at half the bytes. So read the bfloat16 rows' "
          "temp as an upper bound: "
          "on accelerators expect up to about half of it where activations dominate (the "
          "rows without remat), and less change where they do not (with remat, a large share "
          "is float32 gradients and the one block being recomputed)."]
  contrastive = next((r["contrastive"] for r in results.values() if r["contrastive"]), None)
  if contrastive:
    series = contrastive["series"]
    out += [
        "", "## Why `objectives.contrastive.impl='chunked'`", "",
        f"Per-device temporaries of the {contrastive['kind']} loss and its gradient alone "
        f"(`scripts/contrastive_memory.py`, {contrastive['embed_dim']}"
        "-dim embeddings, 8 devices on `data`, XLA CPU). With b = B / n rows per device, the "
        "dense loss holds its rows against the whole global batch, b x B similarities and "
        "their gradient, which grows with the number of devices even at a fixed b; the "
        "chunked one passes embedding chunks around a ring of devices and holds b x b at a "
        "time, n times less, and the same on any number of devices. At the batches of the "
        "tables above the dense loss is small next to the encoders; at CLIP/SigLIP-scale "
        "batches (32k and more) it is not.", "",
        "| global batch | rows per device | dense MiB | chunked MiB |", "|---|---|---|---|"]
    for b, dense, chunked in zip(contrastive["batches"], series["dense"], series["chunked"]):
      out.append(f"| {b} | {b // 8} | {dense / 2**20:.1f} | {chunked / 2**20:.1f} |")
  out += [
      "", "## Not measured here", "",
      "- Speed: nothing runs. Communication (all-gathers of FSDP, tensor-parallel "
      "reductions, the gradient all-reduce of data parallelism) costs time, not memory, and "
      "is not in these tables.",
      "- Evaluation, checkpointing and the input pipeline (host memory).",
      "- On CPU, `generated code` is reported as 0; on accelerators it is small.",
      ""]
  return "\n".join(out)


def write_report(path):
  """Runs this script once per device count (each process needs its own fake devices)."""
  start = time.perf_counter()
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for n in (int(n) for n in _DEVICE_COUNTS.value):
      rows_json = os.path.join(tmp, f"{n}.json")
      subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:],
                      f"--devices={n}", f"--rows_json={rows_json}"], check=True)
      with open(rows_json, encoding="utf-8") as f:
        results[n] = json.load(f)
  text = _report(results, time.perf_counter() - start)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  print(text)
  print(f"\nWrote {path}.", file=sys.stderr)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if _ROWS_JSON.value:
      result = grid_rows(_DEVICES.value)
      with open(_ROWS_JSON.value, "w", encoding="utf-8") as f:
        json.dump(result, f)
    elif _OUT.value:
      write_report(_OUT.value)
    else:
      plan_one()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
