"""Model FLOPs utilization: FLOPs per step from the traced step, over a peak per device.

  flops = mfu.step_flops_per_device(step_fn, state, batch)   # once, from the real step
  peak, source = mfu.peak_flops_per_device("float32")
  mfu = flops / step_seconds / peak

Executed FLOPs are the matrix multiplications (dot_general: 2 x M x N x K) of the whole train
step as traced, forward, backward and rematerialized passes included, padding included: a
scanned body counts once per layer (the planner's count, mmjax.parallel.plan). Element-wise
work (softmax, norms, the optimizer's update) is left out, as is usual for MFU, so the number
is comparable with other codebases' MFU.

Peak per device: the published dense matmul peak of the accelerator (by `device_kind`) for the
compute dtype, or on CPU a measured one: the best rate of a jitted f32[2048, 2048] jnp.dot on
this machine, divided among the CPU devices of this process (fake devices share the cores).
"""
import functools
import math
import time

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

# Published dense (no sparsity) matmul peaks, TFLOP/s per chip, by a substring of device_kind
# (first match wins). float32 on NVIDIA is the TF32 tensor-core peak: XLA's default precision
# runs f32 matmuls in TF32 there. TPUs multiply float32 in bfloat16 passes at the default
# precision, so float32 uses the bfloat16 peak.
PEAK_TFLOPS = (
    ("H200", {"bfloat16": 989.4, "float32": 494.7}),  # H200 SXM (H100's compute).
    ("H100", {"bfloat16": 989.4, "float32": 494.7}),  # H100 SXM.
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("TPU v6", {"bfloat16": 918.0, "float32": 918.0}),  # v6e (Trillium), "TPU v6 lite".
    ("TPU v5 lite", {"bfloat16": 197.0, "float32": 197.0}),  # v5e.
    ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v5", {"bfloat16": 459.0, "float32": 459.0}),  # v5p.
    ("TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
)
_CPU_DOT = 2048  # Side of the square f32 matrices of the measured CPU peak.


def matmul_flops(jaxpr):
  """FLOPs of the matrix multiplications (dot_general: 2 x M x N x K) of a jaxpr, for the
  global arrays: scan bodies count `length` times, the costliest branch of a cond counts, and
  a shard_map body (per-device shapes) counts once per device it runs on; a while loop's
  body (trip count unknown) counts once. Recomputation (remat) counts, as it runs.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # ClosedJaxpr -> Jaxpr.
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      rhs_free = math.prod(rhs) // math.prod(lhs[d] for d in (*lhs_contract, *lhs_batch))
      total += 2 * math.prod(lhs) * rhs_free
      continue
    inner = [matmul_flops(j) for j in jax_core.jaxprs_in_params(eqn.params)]
    if not inner:
      continue
    if name == "cond":
      total += max(inner)
    elif name == "scan":
      total += eqn.params["length"] * sum(inner)
    elif name == "shard_map":
      mesh = eqn.params["mesh"]
      axes = eqn.params.get("manual_axes") or mesh.axis_names
      total += math.prod(mesh.shape[a] for a in axes) * sum(inner)
    else:
      total += sum(inner)
  return total


def step_flops_per_device(step_fn, *args, pmapped=False):
  """Executed matmul FLOPs of one call of `step_fn(*args)` per device: a jitted step on global
  arrays is traced and its count split over the devices it runs on; a pmapped step's body is
  already one device's program."""
  if pmapped:
    return float(matmul_flops(jax.make_jaxpr(step_fn)(*args)))
  devices = {d for x in jax.tree.leaves(args) if hasattr(x, "sharding")
             for d in x.sharding.device_set}
  return matmul_flops(step_fn.trace(*args).jaxpr) / max(len(devices), 1)


@functools.cache
def measured_cpu_peak():
  """FLOP/s of a jitted f32[2048, 2048] jnp.dot on this machine's first CPU device (best of
  5 after a warm-up): what XLA's CPU matmul reaches here, all cores working."""
  device = jax.devices("cpu")[0]
  x = jax.device_put(jnp.ones((_CPU_DOT, _CPU_DOT), jnp.float32), device)
  dot = jax.jit(jnp.dot)
  dot(x, x).block_until_ready()
  best = math.inf
  for _ in range(5):
    start = time.perf_counter()
    dot(x, x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * _CPU_DOT ** 3 / best


def peak_flops_per_device(dtype, device=None):
  """(peak FLOP/s of one device for matmuls in `dtype`, where the number comes from)."""
  device = device or jax.local_devices()[0]
  dtype = jnp.dtype(dtype).name
  if device.platform == "cpu":
    share = len(jax.local_devices(backend="cpu"))
    return (measured_cpu_peak() / share,
            f"measured jnp.dot peak on this CPU ({measured_cpu_peak() / 1e9:.0f} GFLOP/s, "
            f"f32[{_CPU_DOT}]^2) / {share} CPU device(s)")
  for kind, peaks in PEAK_TFLOPS:
    if kind.lower() in device.device_kind.lower():
      return (peaks.get(dtype, peaks["float32"]) * 1e12,
              f"published {dtype} peak of {kind} ({device.device_kind})")
  return None, f"no published peak for {device.device_kind!r}: MFU is not reported"
