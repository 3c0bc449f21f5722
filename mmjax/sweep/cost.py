"""What a sweep costs in accelerator-hours, by the planner (`python -m mmjax.sweep ... --cost`).

Each stage's train step is traced with abstract inputs of the stage's shapes at a small batch
(mmjax.train.planner.traced_flops: nothing is allocated or compiled, no data is read); its
matmul FLOPs per example, times the examples the stage trains on (batch x steps), over an
accelerator's published dense peak at an assumed MFU, is its accelerator time. Evaluation
passes are left out. Stages whose configs differ only in steps, batch or seed are traced once.
"""
import importlib
import re

from mmjax.errors import UserError
from mmjax.sweep.spec import config_hash, stage_config, stage_configs

PLANNED_BATCH = 8  # Examples per compiled step: matmul FLOPs grow linearly with the batch.
DEFAULT_ACCELERATOR = "NVIDIA H100 80GB HBM3"
DEFAULT_MFU = 0.4


def modalities(config):
  """The modalities a stage's model reads: a classifier's inputs, else its dataset's (a
  standard dataset's and its mixture entries'; the built-in datasets have all three)."""
  from mmjax.data import standard  # pylint: disable=g-import-not-at-top
  if config.model.get("inputs"):
    return tuple(config.model.inputs)
  names = [config.data.name, *config.data.get("mixture", {}).keys()]
  if all(name in standard.DATASETS for name in names):
    return tuple(sorted({m for n in names for m in standard.DATASETS[n].modalities}))
  return ("image", "text", "audio")


def image_size(config):
  """The square image size of a stage's inputs: what its evaluation preprocessing resizes to,
  or a built-in dataset's IMAGE_SIZE (mmjax_scenes: mmjax.data.scenes.IMAGE_SIZE)."""
  sizes = re.findall(r"resize\((\d+)", config.data.pp_eval)
  if sizes:
    return int(sizes[-1])
  name = config.data.name
  if name.startswith("mmjax_"):
    module = importlib.import_module(f"mmjax.data.{name[len('mmjax_'):]}")
    if hasattr(module, "IMAGE_SIZE"):
      return module.IMAGE_SIZE
  raise UserError(f"--cost: cannot tell the image size of {name!r}: data.pp_eval "
                  f"{config.data.pp_eval!r} has no resize(N).")


def flops_per_example(config, cache):
  """Matmul FLOPs of one training example of `config`'s train step (traced at PLANNED_BATCH
  examples on one device), cached by the config without its steps, batch and seed."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from mmjax.train import planner  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.batch_size = PLANNED_BATCH
    config.total_steps = max(config.optimizer.warmup_steps + 1, 2)
    config.seed = 0
    config.parallel.grad_accum_steps = 1
    for axis in config.mesh:
      config.mesh[axis] = 1
  key = config_hash({"stage": config})
  if key not in cache:
    data = config.data
    reads = modalities(config)
    image = (image_size(config),) * 2 + (3,) if "image" in reads else (1, 1, 3)
    info = planner.dataset_info(
        image_shape=image, text_len=data.text_len, vocab_size=data.vocab_size,
        audio_seconds=data.audio_seconds, sample_rate=data.sample_rate, modalities=reads)
    mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
    cache[key] = planner.traced_flops(config, info, mesh) / PLANNED_BATCH
  return cache[key]


def sweep_cost(sweep, all_tasks, extra=None, accelerator=DEFAULT_ACCELERATOR, mfu=DEFAULT_MFU,
               log=print):
  """Prints each point's (and baseline's) stages with their FLOPs and accelerator-hours per
  seed, and the sweep's total over every seed; returns the total accelerator-hours."""
  from mmjax.train import mfu as mfu_lib  # pylint: disable=g-import-not-at-top
  if accelerator not in mfu_lib.PEAK_TFLOPS:
    raise UserError(f"--accelerator={accelerator!r}: use a device kind of "
                    f"mmjax.train.mfu.PEAK_TFLOPS: {sorted(mfu_lib.PEAK_TFLOPS)}.")
  variant, peaks = mfu_lib.PEAK_TFLOPS[accelerator]
  rate = peaks["bfloat16"] * 1e12 * mfu
  cache, total, task_hours = {}, 0.0, {}
  log(f"Accelerator-hours on the {variant} (bfloat16 peak {peaks['bfloat16']:g} TFLOP/s) at an "
      f"assumed {mfu:.0%} MFU; training steps only, evaluation left out.")
  for task in all_tasks:
    if task.point in task_hours:  # Another seed: the same work.
      total += task_hours[task.point]
      continue
    hours, parts = 0.0, []
    for stage, (spec, overrides) in stage_configs(
        sweep, task.overrides, task.seed, extra, bool(task.baseline)).items():
      config = stage_config(spec, overrides, False, f"{task.point}, stage {stage}")
      per_example = flops_per_example(config, cache)
      flops = per_example * config.batch_size * config.total_steps
      hours += flops / rate / 3600
      parts.append(f"{stage} {per_example / 1e6:,.1f} MFLOP/example x {config.total_steps:,} "
                   f"steps of {config.batch_size:,} = {flops:.3g} FLOP")
    task_hours[task.point] = hours
    total += hours
    log(f"  {task.point}: {hours:.3g} h per seed: " + "; ".join(parts))
  log(f"Total over {len(all_tasks)} point x seed runs: {total:.3g} accelerator-hours.")
  return total
