"""Ahead-of-time memory and FLOPs of the real train step on a (possibly fake) mesh.

  info = planner.dataset_info()                   # 224x224 images, 64 tokens, 10 s of audio
  config = planner.with_inputs(config)            # patch and log-mel settings for them
  mesh = mesh_lib.make_mesh({"fsdp": 8})
  numbers = planner.plan(config, info, mesh)      # bytes per device, FLOPs per step

Nothing is allocated and no data is read: the train step of mmjax.train.trainer is traced with
abstract arrays (shapes, dtypes and shardings) and compiled by XLA for `mesh`, whose devices
may be fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX
starts). Parameter and optimizer bytes are exact (their shards' shapes); the rest is what the
compiler reports for one device's program, so it is only as good as that compiler's estimate:
the CPU compiler fuses and schedules differently from the TPU and GPU ones.
"""
import time

import jax
import jax.numpy as jnp

from mmjax.data import info as info_lib
from mmjax.models import sizes
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import loops
from mmjax.train import memory as memory_lib
from mmjax.train import mfu
from mmjax.train import optimizer
from mmjax.train import trainer
from mmjax.train import validate

# Model input settings for `dataset_info`'s defaults: ViT-style 16 x 16 image patches, and
# AST/AudioMAE-style log-mel: 25 ms windows, 10 ms hop, 128 mel bands, 16 x 16 patches
# (10 s -> 998 frames -> 62 x 8 = 496 audio tokens; a 224 x 224 image is 196 tokens).
IMAGE_PATCH = 16
AUDIO = dict(frontend="logmel", n_fft=400, hop=160, n_mels=128, patch_time=16, patch_freq=16)


def dataset_info(image_shape=(224, 224, 3), text_len=64, vocab_size=32000, audio_seconds=10.0,
                 sample_rate=16000, modalities=("image", "text", "audio")):
  """A DatasetInfo of pretraining-size inputs of the built-in modalities, with no data behind
  it (mmjax.data.info.planned takes any registered modality's sizes)."""
  sizes = {"image": tuple(image_shape), "text": text_len,
           "audio": round(audio_seconds * sample_rate)}
  return info_lib.planned({m: sizes[m] for m in modalities}, vocab_size=vocab_size,
                          sample_rate=sample_rate)


def with_inputs(config, image_patch=IMAGE_PATCH, audio=None):
  """A copy of `config` with model input settings for pretraining-size inputs: image patches
  of `image_patch` pixels, and `audio` (default AUDIO) log-mel and patch settings."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.image.patch_size = image_patch
    config.model.audio.update(AUDIO if audio is None else audio)
    config.model.audio.fmax = 0.0  # Nyquist of info.sample_rate.
  return config


def abstract_batch(info, batch_size, mesh, axes):
  """{key: ShapeDtypeStruct} of a global batch as the train step sees it, batch-sharded over
  the batch `axes`: each modality's keys (mmjax.modalities) and the labels."""
  s = mesh_lib.batch_sharding(mesh, axes)
  dtypes = info_lib.batch_dtypes(info.modalities)
  spec = {k: ((batch_size, *shape), dtypes[k]) for k, shape in info_lib.batch_shapes(info).items()}
  spec |= {k: ((batch_size,), jnp.int32) for k in ("label", "image_id", "row")}
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=s) for k, (shape, dtype) in spec.items()}


def _xla_flops(compiled):
  """FLOPs of one device's program from XLA's cost analysis, or None if it has none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # Some backends do not implement it.
    return None
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  flops = float(cost["flops"])
  return flops if flops > 0 else None


def _trace(config, info, mesh):
  """(config's train step traced with abstract arrays on `mesh`, the abstract state, its
  shardings), after the config and mesh checks."""
  validate.check_config(config)
  validate.check_parallel(config, mesh)
  rules = sharding.rules_from_config(config.parallel.rules)
  tx, lr_schedule = optimizer.make(config.optimizer, config.total_steps,
                                   depth=sizes.of(config.model).depth)
  graphdef, abstract_state = trainer.abstract_model(config, info, tx)
  state_shardings = sharding.param_shardings(abstract_state, mesh, rules)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, state_shardings)
  step = loops.jit_train_step(config, info, mesh, tx, lr_schedule, graphdef, state_shardings)
  with sharding.use(mesh, rules):
    traced = step.trace(abstract_state, abstract_batch(info, config.batch_size, mesh,
                                                       mesh_lib.batch_axes(config.parallel.rules)))
  return traced, abstract_state, state_shardings


def traced_flops(config, info, mesh):
  """Matmul FLOPs of one train step of `config` on the global batch, counted in the traced
  step (mfu.matmul_flops: the work the model asks for, before any device splits it); traced
  only, never compiled, so seconds even for large models."""
  traced, _, _ = _trace(config, info, mesh)
  return float(mfu.matmul_flops(traced.jaxpr))


def plan(config, info, mesh):
  """Compiles config's train step for `mesh` and returns its per-device numbers.

  Returns a dict: num_params; bytes per device of params and opt_state (exact, from their
  shardings); argument, output, alias (outputs that reuse donated arguments), temp and
  generated_code bytes from `compiled.memory_analysis()`; peak = argument + output - alias +
  temp (what XLA keeps live at once, at most); flops: matmul FLOPs of one step on one device,
  counted in its compiled program (`mfu.compiled_matmul_flops`: work a mesh axis repeats
  rather than splits counts on every device, as it runs); xla_flops: FLOPs of one device's
  compiled program by XLA's cost analysis, None where the backend reports none (it counts a
  loop body once, so it is far too low with scan_layers); trace_s and compile_s. Raises
  UserError for a config that does not fit the mesh (e.g. a batch size the data axes do not
  divide).
  """
  start = time.perf_counter()
  traced, abstract_state, state_shardings = _trace(config, info, mesh)
  with sharding.use(mesh, sharding.rules_from_config(config.parallel.rules)):
    lowered = traced.lower()
  trace_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start - trace_s

  memory = compiled.memory_analysis()
  numbers = {
      "num_params": sum(x.size for x in jax.tree.leaves(abstract_state["params"])),
      "params": memory_lib.shard_bytes(abstract_state["params"], state_shardings["params"]),
      "opt_state": memory_lib.shard_bytes(abstract_state["opt_state"],
                                          state_shardings["opt_state"]),
      "argument": int(memory.argument_size_in_bytes),
      "output": int(memory.output_size_in_bytes),
      "alias": int(memory.alias_size_in_bytes),
      "temp": int(memory.temp_size_in_bytes),
      "generated_code": int(memory.generated_code_size_in_bytes),
      "flops": mfu.compiled_matmul_flops(compiled.as_text()),
      "xla_flops": _xla_flops(compiled),
      "trace_s": trace_s,
      "compile_s": compile_s,
  }
  numbers["peak"] = (numbers["argument"] + numbers["output"] - numbers["alias"]
                     + numbers["temp"])
  return numbers
