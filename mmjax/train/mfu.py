"""Model FLOPs utilization: FLOPs per step from the compiled step, over a peak per device.

  flops = mfu.step_flops_per_device(step_fn, state, batch)   # once, from the real step
  peak, source = mfu.peak_flops_per_device("float32")
  mfu = flops / step_seconds / peak

Executed FLOPs are the matrix multiplications (2 x M x N x K) of the whole train step, forward,
backward and rematerialized passes included, padding included: a scanned body counts once per
layer. They are counted per device as it runs, in one device's compiled program: a mesh axis
that the sharding rules leave out of the batch (rules.batch='data' on a data x fsdp mesh)
repeats work on each of its devices, or splits it, as XLA partitioned the step, and the count
says which. Where a backend hides its matmuls in calls this module cannot read, the traced
step's global count split evenly over the devices is used instead, and logged. Element-wise
work (softmax, norms, the optimizer's update) is left out, as is usual for MFU, so the number
is comparable with other codebases' MFU.

Peak per device: the published dense matmul peak of the accelerator for the compute dtype, by
its exact `device_kind` (an H100 PCIe is not an H100 SXM), or on CPU a measured one: the best
rate of a jitted f32[2048, 2048] jnp.dot on this machine, divided among the CPU devices of this
process (fake devices share the cores). An accelerator the table does not list gets no MFU.
"""
import functools
import math
import re
import time

import jax
import jax.numpy as jnp
from absl import logging
from jax.extend import core as jax_core

# Published dense (no sparsity: half the datasheets' starred numbers) matmul peaks, TFLOP/s per
# device, by exact device_kind: (variant, {dtype: peak}). float32 on NVIDIA is the TF32
# tensor-core peak: XLA's default precision runs f32 matmuls in TF32 there. TPUs multiply
# float32 in bfloat16 passes at the default precision, so float32 uses the bfloat16 peak.
_H100_SXM = {"bfloat16": 989.4, "float32": 494.7}
_H100_PCIE = {"bfloat16": 756.5, "float32": 378.0}
_HOPPER_NVL = {"bfloat16": 835.5, "float32": 417.5}
_A100 = {"bfloat16": 312.0, "float32": 156.0}
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": ("H100 SXM5", _H100_SXM),
    "NVIDIA H100 PCIe": ("H100 PCIe", _H100_PCIE),
    "NVIDIA H100 NVL": ("H100 NVL", _HOPPER_NVL),
    "NVIDIA H200": ("H200 SXM (H100 SXM's compute)", _H100_SXM),
    "NVIDIA H200 NVL": ("H200 NVL", _HOPPER_NVL),
    "NVIDIA GH200 480GB": ("GH200 (H100 SXM's compute)", _H100_SXM),
    "NVIDIA A100-SXM4-40GB": ("A100 SXM4 40GB", _A100),
    "NVIDIA A100-SXM4-80GB": ("A100 SXM4 80GB", _A100),
    "NVIDIA A100-PCIE-40GB": ("A100 PCIe 40GB", _A100),
    "NVIDIA A100 80GB PCIe": ("A100 PCIe 80GB", _A100),
    "TPU v4": ("TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
    "TPU v5 lite": ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    "TPU v5e": ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    "TPU v5": ("TPU v5p", {"bfloat16": 459.0, "float32": 459.0}),
    "TPU v5p": ("TPU v5p", {"bfloat16": 459.0, "float32": 459.0}),
    "TPU v6 lite": ("TPU v6e (Trillium)", {"bfloat16": 918.0, "float32": 918.0}),
    "TPU v6e": ("TPU v6e (Trillium)", {"bfloat16": 918.0, "float32": 918.0}),
}
# The compiled count is trusted when it finds at least this share of an even split of the
# traced count; less means matmuls it cannot read (a backend's own calls).
_READABLE = 0.75
_CPU_DOT = 2048  # Side of the square f32 matrices of the measured CPU peak.


def useful_flops(model, passes):
  """Forward matmul FLOPs on real tokens only (useful MFU, docs/performance.md) of the call of
  `model` (the pretraining model) that reported `passes` (mmt.Passes): the tokenizers' patch
  embeddings; in the masked pass the encoder on the visible real tokens, the decoder and its
  heads on all real tokens; the encoder on all real tokens of each modality encoded clean; the
  projection of each example with a modality embedded."""
  from mmjax.models import encoding  # pylint: disable=g-import-not-at-top
  from mmjax.models.transformer import linear_flops  # pylint: disable=g-import-not-at-top
  tokens, visible = passes.tokens, passes.visible
  blocks = lambda m: encoding.encoder_of(model, m).blocks
  flops = [linear_flops(model.tokenizers[m].patch_embed, valid)
           for m, valid in tokens.items() if hasattr(model.tokenizers[m], "patch_embed")]
  if visible and model.fusion == "joint":  # One shared encoder and decoder pass.
    flops += [blocks(None).useful_flops(jnp.concatenate(list(visible.values()), 1)),
              model.decoder.blocks.useful_flops(jnp.concatenate([tokens[m] for m in visible], 1))]
  elif visible:
    flops += [blocks(m).useful_flops(v) for m, v in visible.items()]
    flops += [model.decoder.blocks.useful_flops(tokens[m]) for m in visible]
  flops += [linear_flops(model.decoder.embed_of(m), v) for m, v in visible.items()]
  flops += [linear_flops(model.decoder.heads[m], tokens[m]) for m in visible]
  flops += [blocks(m).useful_flops(tokens[m]) for m in passes.clean]
  flops += [linear_flops(model.projections[m].proj, tokens[m].any(1, keepdims=True))
            for m in passes.embedded]
  return jax.lax.stop_gradient(sum(flops))


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
  """Executed matmul FLOPs of one call of `step_fn(*args)` on one device, as it runs: a pmapped
  step's body is one device's program; a jitted step on global arrays is compiled (the call
  that follows reuses the executable) and one device's program counted (compiled_matmul_flops).
  If that program's matmuls cannot be read, the traced count split over the devices, logged."""
  if pmapped:
    return float(matmul_flops(jax.make_jaxpr(step_fn)(*args)))
  traced = step_fn.trace(*args)
  devices = {d for x in jax.tree.leaves(args) if hasattr(x, "sharding")
             for d in x.sharding.device_set}
  even = matmul_flops(traced.jaxpr) / max(len(devices), 1)
  try:
    counted = compiled_matmul_flops(traced.lower().compile().as_text())
  except Exception as e:  # pylint: disable=broad-except  # A backend without HLO text.
    logging.warning("MFU: no compiled program to count (%s: %s).", type(e).__name__, e)
    counted = 0
  if counted < _READABLE * even:
    logging.warning("MFU: one device's compiled step shows %.3g matmul FLOPs, less than an even "
                    "share (%.3g) of the traced step's; its matmuls are not all readable, so "
                    "MFU uses the even share (low where a mesh axis repeats work).", counted,
                    even)
    return even
  return float(counted)


# One instruction of HLO text: `%name = shape opcode(operands), attributes`.
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?(%[\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_NAME = re.compile(r"%[\w.\-]+")


def _dims(shape):
  """Dimensions of an HLO shape (the first array of a tuple), or None."""
  m = re.search(r"\w+\[([\d,]*)\]", shape)
  return [int(d) for d in m.group(1).split(",") if d] if m else None


def _ints(pattern, text):
  m = re.search(pattern, text)
  return [int(d) for d in re.findall(r"\d+", m.group(1))] if m else []


def _own_flops(op, out, operands, rest):
  """Matmul FLOPs of one instruction: 2 x output elements x the contraction per element."""
  lhs, rhs = (operands + [None, None])[:2]
  if out is None:
    return 0
  if op == "dot" and lhs:
    contracting = _ints(r"lhs_contracting_dims=\{([^}]*)\}", rest)
    return 2 * math.prod(out) * math.prod(lhs[d] for d in contracting)
  if op == "convolution" and rhs:  # Each output element: the kernel's size over its outputs.
    kernel = re.search(r"dim_labels=[^_]*_([^-]*)->", rest)
    if kernel and "o" in kernel.group(1):
      return 2 * math.prod(out) * math.prod(rhs) // rhs[kernel.group(1).index("o")]
  if op == "custom-call" and lhs and 'custom_call_target="__cublas' in rest:  # GPU gemms.
    return 2 * math.prod(out) * math.prod(
        lhs[d] for d in _ints(r'"lhs_contracting_dimensions":\[([^\]]*)\]', rest))
  return 0


def compiled_matmul_flops(hlo_text):
  """Matmul FLOPs of one device's compiled program (`compiled.as_text()`, after XLA's SPMD
  partitioning: per-device shapes): dots, convolutions and cuBLAS gemm calls, fused or not; a
  while loop's body times its known trip count (once where XLA knows none, as in
  matmul_flops), the costliest branch of a conditional."""
  computations, entry, body = {}, None, None
  for line in hlo_text.splitlines():
    if line[:1] not in ("", " ") and line.rstrip().endswith("{"):  # A computation begins.
      name = _NAME.search(line)
      body = computations.setdefault(name.group(), []) if name else None
      entry = name.group() if name and line.startswith("ENTRY") else entry
    elif body is not None and (m := _INSTRUCTION.match(line)):
      body.append(m.groups())
  totals = {}

  def total(name):
    if name not in totals:
      totals[name], shapes, flops = 0, {}, 0
      for var, shape, op, rest in computations.get(name, ()):
        shapes[var] = _dims(shape)
        flops += _own_flops(op, shapes[var], [shapes.get(o) for o in _NAME.findall(rest)[:2]],
                            rest)
        if op.endswith(("-done", "-update")):
          continue  # An async op's computation is named by its start too: count it once.
        if op == "while":
          trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
          flops += (int(trips.group(1)) if trips else 1) * sum(
              total(c) for c in re.findall(r"body=(%[\w.\-]+)", rest))
          continue
        branches = re.findall(r"(?:true|false)_computation=(%[\w.\-]+)", rest)
        branches += _NAME.findall(" ".join(re.findall(r"branch_computations=\{([^}]*)\}", rest)))
        if branches:
          flops += max(total(c) for c in branches)
          continue
        flops += sum(total(c) for c in re.findall(r"(?:calls|to_apply)=(%[\w.\-]+)", rest))
      totals[name] = flops
    return totals[name]

  return total(entry) if entry else 0


@functools.cache
@functools.cache
def measured_cpu_peak():
  """FLOP/s of a jitted f32[2048, 2048] jnp.dot on this machine's first CPU device (best of
  5 after a warm-up): what XLA's CPU matmul reaches here, all cores working. Measured once
  per process."""
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
  """(peak FLOP/s of one device for matmuls in `dtype`, or None; where the number comes from,
  for the log: the variant and the peak used)."""
  device = device or jax.local_devices()[0]
  dtype = jnp.dtype(dtype).name
  if device.platform == "cpu":
    share = len(jax.local_devices(backend="cpu"))
    return (measured_cpu_peak() / share,
            f"measured jnp.dot peak on this CPU ({measured_cpu_peak() / 1e9:.0f} GFLOP/s, "
            f"f32[{_CPU_DOT}]^2) / {share} CPU device(s)")
  if device.device_kind not in PEAK_TFLOPS:
    return None, (f"no published peak for device_kind {device.device_kind!r} in "
                  "mmjax.train.mfu.PEAK_TFLOPS: MFU is not reported")
  variant, peaks = PEAK_TFLOPS[device.device_kind]
  used = dtype if dtype in peaks else "float32"
  return (peaks[used] * 1e12, f"the published dense {used} peak of the {variant} "
          f"({device.device_kind!r}): {peaks[used]:g} TFLOP/s per device")
