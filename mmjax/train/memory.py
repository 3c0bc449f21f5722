"""Will a training run fit? Memory per device, estimated before anything is allocated, and the
memory a device has.

  numbers = memory.estimate(config, info, mesh, abstract_state, state_shardings)
  limit, where = memory.device_bytes()
  memory.refuses(numbers, limit)  # estimate x (1 + MARGIN) > limit

Nothing is compiled. Parts, per device:
- params, opt_state: exact, from the abstract state's shapes and their shardings (the bytes of
  each device's shards, as mmjax.train.planner counts them).
- grads: the parameters' bytes again (twice with gradient accumulation: the micro-batch's and
  the running sum).
- activations: an analytic estimate from the batch rows per device, the tokens of each encoder
  and decoder pass, width, depth, heads and remat: what each Transformer block keeps for the
  backward pass (_block_bytes), summed over blocks, plus one block's worth recomputed or in
  flight, plus the output heads' float32 predictions.
- update: the optimizer update's transient copy, the parameters' bytes once more.
- checkpoint (CPU devices only): an asynchronous save's host copy of the state, live while the
  next steps run. On a GPU or TPU it is in host RAM, not device memory, and not counted.
- runtime (CPU devices only): XLA's compiler and runtime, the evaluators and the input
  pipeline, a measured constant per process (RUNTIME_BYTES).

How good: docs/memory.md (scripts/memory_check.py) measures real runs' peak RSS on one CPU
device at sizes tiny to B. There, the estimate is 0.96-1.43x the measured peak (high at tiny,
where the runtime allowance dominates; 1.01 at B). The parts that grow with the model are exact
(state, update, checkpoint) or within 6% of XLA's temporaries (gradients, activations and
update against compiled.memory_analysis(), S at batch 4 and 16, scan_layers=False). Without
the update, checkpoint and runtime, the estimate was 0.05-0.3x: the size-H run of issue 22
passed at "13.1 GiB" and was OOM-killed at 24 GB RSS. Not covered: scan_layers=True, whose
XLA CPU temporaries are about 5x the parameters more (S), and accelerator compilers, which
keep less than the CPU one. `python scripts/plan.py` compiles the step and reads XLA's own
numbers.
"""
import math
import os

import jax
import numpy as np

from mmjax import modality as modality_lib
from mmjax import objectives
from mmjax.models import sizes
from mmjax.models import masking
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import step as step_lib

GIB = 2**30
# XLA's compiler and runtime, the evaluators and the input pipeline, per process, on CPU (where
# they share the devices' RAM): the measured peak less every other part came to 1.2-1.9 GiB
# from size tiny to B on one CPU device (docs/memory.md), about flat in the model's size.
RUNTIME_BYTES = int(1.75 * GIB)
# The check refuses when the estimate plus this fraction exceeds the memory. The measured
# points (docs/memory.md) are tiny to B; a larger model's compile and activations (the rough
# part) can exceed them, and a pass must mean the run fits, so an estimate within 10% of the
# memory is refused too (config.check_memory=False runs it anyway).
MARGIN = 0.1


def shard_bytes(abstract_tree, shardings):
  """Bytes one device holds of `abstract_tree` laid out by `shardings` (leaves and shardings in
  the same tree order): shard shape x item size, summed."""
  return sum(math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
             for x, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)))


def _host_available_bytes():
  """Host RAM this process can still get: MemAvailable, capped by a cgroup (container) limit."""
  available = None
  try:
    with open("/proc/meminfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except OSError:
    pass
  if available is None:
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  try:  # cgroup v2: the container's limit less what it already uses.
    with open("/sys/fs/cgroup/memory.max", encoding="utf-8") as f:
      limit = f.read().strip()
    with open("/sys/fs/cgroup/memory.current", encoding="utf-8") as f:
      used = int(f.read().strip())
    if limit != "max":
      available = min(available, int(limit) - used)
  except (OSError, ValueError):
    pass
  return available


def device_bytes():
  """(bytes one device can use, where that number comes from).

  GPU / TPU: the allocator's limit (memory_stats()['bytes_limit']). CPU: the host RAM still
  available (MemAvailable, or a container's limit), shared by this process's CPU devices.
  """
  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-exception-caught  # Not every backend has it.
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"the {device.device_kind} memory limit"
  host = _host_available_bytes()
  n = jax.local_device_count()
  share = f", shared by {n} CPU devices" if n > 1 else ""
  return host // n, f"available host RAM ({host / GIB:.1f} GiB{share})"


def _mesh_size(rules, mesh, logical):
  """Devices that logical axis `logical` is split over under `rules`."""
  axes = dict(rules).get(logical)
  if axes is None:
    return 1
  return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def _block_bytes(n, width, heads, mlp, remat, tensor, item):
  """Bytes per sequence row that one Transformer block (mmjax.models.transformer.Block) keeps
  for the backward pass, for a sequence of n tokens in a compute dtype of `item` bytes.

  remat 'none': LayerNorm inputs and outputs (4 x width), q/k/v and the attention output
  (4 x width), the MLP's hidden layer before and after the GELU (2 x mlp), and attention
  logits and probabilities (2 x heads x n per token, float32: the softmax runs in float32);
  'dots': the block's input and the matmul outputs without batch dimensions (q/k/v, attention
  out, fc1, fc2); 'full': the block's input only. Heads and the MLP's hidden units are split
  over `tensor` devices.
  """
  if remat == "full":
    return n * width * item
  if remat == "dots":
    return n * (3 * width + (3 * width + mlp) / tensor) * item
  return n * ((4 * width + (4 * width + 2 * mlp) / tensor) * item + 2 * heads * n / tensor * 4)


def _passes(config, info):
  """([(tokens, depth, width, heads, mlp), ...] of every Transformer pass one step makes per
  example, [(tokens, output features), ...] of the f32 output heads)."""
  model = config.model
  if model.name == "raw":  # No Transformer: a linear map of fixed features (mmjax.models.raw).
    return [], []
  size = sizes.of(model)
  grid = {m: math.prod(modality_lib.get(m).token_grid(model, info))
          for m in modality_lib.ordered(info.modalities)}

  def encoder(n, m=None):  # m's tower, or the shared encoder.
    s = sizes.of(model, m)
    return n, s.depth, s.width, s.num_heads, s.mlp_dim
  decoder = lambda n: (n, size.decoder_depth, size.decoder_width, size.decoder_heads,
                       size.decoder_mlp)
  joint = model.fusion == "joint"
  if model.name == "classifier":
    inputs = [m for m in grid if m in model.inputs]
    return ([encoder(sum(grid[m] for m in inputs))] if joint
            else [encoder(grid[m], m) for m in inputs]), []

  ratios = step_lib.mask_ratios(config.objectives, info.modalities)
  masked = [m for m in grid if m in ratios]
  kept = [grid[m] if modality_lib.get(m).masks_in_place else masking.num_keep(grid[m], ratios[m])
          for m in masked]
  passes = []
  if masked:
    passes += [encoder(sum(kept))] if joint else [encoder(k, m) for k, m in zip(kept, masked)]
    filled = [grid[m] for m in masked]
    passes += [decoder(sum(filled))] if joint else [decoder(n) for n in filled]
  view = objectives.embedding_view(config.objectives)
  clean = [m for m in grid if view == "clean" or (view == "masked" and m not in masked)]
  passes += [encoder(grid[m], m) for m in clean]
  return passes, [(grid[m], modality_lib.get(m).out_dim(model, info)) for m in masked]


def activation_bytes(config, info, mesh):
  """Rough bytes of activations per device for one (micro-)batch: see the module docstring."""
  rules = sharding.rules_from_config(config.parallel.rules)
  if config.parallel.loop == "pmap":
    rules = sharding.rules_from_config(sharding.strategy_rules("data_parallel"))
  rows = config.batch_size / mesh_lib.data_parallel_size(
      mesh, mesh_lib.batch_axes(config.parallel.rules)) / config.parallel.grad_accum_steps
  tensor = _mesh_size(rules, mesh, "mlp")
  item = np.dtype(config.model.dtype).itemsize
  passes, heads = _passes(config, info)
  remat = config.model.remat
  kept = sum(depth * _block_bytes(n, width, nh, mlp, remat, tensor, item)
             + 4 * n * width * item  # The stack's input, its final LayerNorm, the embeddings.
             for n, depth, width, nh, mlp in passes)
  # One block in flight in the backward pass: recomputed (remat) or its gradients.
  in_flight = max((_block_bytes(n, width, nh, mlp, "none", tensor, item)
                   for n, _, width, nh, mlp in passes), default=0)
  outputs = sum(2 * n * features * 4 for n, features in heads)  # f32 predictions + gradients.
  return int(rows * (kept + in_flight + outputs))


def _on_host(mesh):
  """True when the mesh's devices are this host's CPUs: device memory is host RAM, so the
  checkpoint's host copy and XLA's compiler and runtime count against it."""
  return mesh.devices.flat[0].platform == "cpu"


def estimate(config, info, mesh, abstract_state, state_shardings):
  """{'params', 'opt_state', 'grads', 'activations', 'update', 'checkpoint', 'runtime',
  'total'}: bytes per device of a training run of `config` on `mesh` (abstract_state and
  state_shardings as the trainer makes them). See the module docstring for each part."""
  params = shard_bytes(abstract_state["params"], state_shardings["params"])
  numbers = {
      "params": params,
      "opt_state": shard_bytes(abstract_state["opt_state"], state_shardings["opt_state"]),
      "grads": params * (2 if config.parallel.grad_accum_steps > 1 else 1),
      "activations": activation_bytes(config, info, mesh),
      # The new parameters and moments are made next to the old ones, which apply_if_finite
      # keeps until it has chosen (XLA CPU: 0.9-1.2x the parameters in docs/memory.md).
      "update": params,
      "checkpoint": 0,
      "runtime": 0,
  }
  if _on_host(mesh):
    # An asynchronous save copies the state to host RAM (each process its shards, one replica)
    # and the next steps run while it is written: twice the state's bytes at the peak, measured
    # (1.6-1.8x at S and B, docs/memory.md), shared by the mesh's devices.
    state = sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract_state))
    numbers["checkpoint"] = 2 * state // mesh.size
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    numbers["runtime"] = RUNTIME_BYTES // max(local, 1)
  numbers["total"] = sum(numbers.values())
  return numbers


def refuses(numbers, limit):
  """True when the estimate plus MARGIN does not fit in `limit` bytes (see MARGIN)."""
  return numbers["total"] * (1 + MARGIN) > limit
