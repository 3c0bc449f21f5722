"""The ahead-of-time planner: FSDP's per-device state is 1/8 of data parallel's on 8 devices,
XLA's numbers are there, and the matmul FLOP count agrees with XLA's where XLA's is exact."""
import types

import jax
import jax.numpy as jnp
import pytest

from configs import common
from mmjax.parallel import mesh as mesh_lib
from mmjax.train import planner as plan
from mmjax.train import mfu

DEVICES = 8


@pytest.fixture(scope="module")
def plans(runlocal_config):
  """Tiny model, small image and text inputs (no dataset: half the compile time of the three
  modalities), planned under data_parallel on data=8 and under fsdp on fsdp=8."""
  info = plan.dataset_info(image_shape=(32, 32, 3), text_len=8, vocab_size=256,
                           modalities=("image", "text"))
  results = {}
  for strategy, mesh_cfg in (("data_parallel", {"data": DEVICES}), ("fsdp", {"fsdp": DEVICES})):
    config = runlocal_config.copy_and_resolve_references()
    config.objectives.masked_audio.weight = 0.0
    config.mesh, config.parallel = common.parallel_config(strategy)
    results[strategy] = plan.plan(plan.with_inputs(config), info,
                                  mesh_lib.make_mesh(mesh_cfg))
  return results


@pytest.mark.slow  # Compiles the step for two meshes.
def test_fsdp_holds_an_eighth_of_the_state(plans):
  dp, fsdp = plans["data_parallel"], plans["fsdp"]
  assert dp["num_params"] == fsdp["num_params"]
  # Data parallel: a whole float32 copy per device, and AdamW's two moments.
  assert dp["params"] == 4 * dp["num_params"]
  assert dp["opt_state"] >= 2 * dp["params"]
  ratio = (fsdp["params"] + fsdp["opt_state"]) / (dp["params"] + dp["opt_state"])
  # Not quite 1/8: norm scales, the 2-wide decoder type embedding and scalars stay replicated.
  assert 1 / DEVICES <= ratio < 1.3 / DEVICES, ratio


@pytest.mark.slow  # Compiles the step for two meshes.
@pytest.mark.parametrize("strategy", ["data_parallel", "fsdp"])
def test_numbers_are_consistent(plans, strategy):
  p = plans[strategy]
  # The train state and the batch are arguments; the donated state comes back as outputs.
  assert p["argument"] >= p["params"] + p["opt_state"]
  assert 0 < p["alias"] <= p["output"]
  assert p["temp"] > 0
  assert p["peak"] >= p["argument"] + p["temp"]
  assert p["flops"] > 0
  if p["xla_flops"] is not None:
    # Unscanned layers: XLA counts every matmul too, plus elementwise work (a larger share in
    # the tiny model than in real ones, where the two agree within a few percent).
    assert 0.7 * p["xla_flops"] <= p["flops"] <= 1.05 * p["xla_flops"], p


def test_matmul_flops_count_scanned_and_sharded_work():
  mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

  def f(x_bd, w_ldd):
    x_bd, _ = jax.lax.scan(lambda x, w: (x @ w, None), x_bd, w_ldd)  # 5 x [16,32] @ [32,32].
    y = jax.shard_map(lambda x: x @ x.T, mesh=mesh, in_specs=jax.P("data"),
                      out_specs=jax.P("data"))(x_bd)  # 8 x [2,32] @ [32,2].
    return jnp.einsum("bd,bd->b", x_bd, x_bd).sum() + y.sum()  # 16 x [1,32] @ [32,1].

  jaxpr = jax.make_jaxpr(f)(jnp.zeros((16, 32)), jnp.zeros((5, 32, 32)))
  assert mfu.matmul_flops(jaxpr) == 5 * 2 * 16 * 32 * 32 + 8 * 2 * 2 * 32 * 2 + 2 * 16 * 32


def test_step_flops_match_the_analytic_count_of_a_scanned_encoder():
  """The count MFU uses (mfu.step_flops_per_device on a jitted step) against the textbook
  count: a Transformer layer's forward pass is 2 x tokens x (4 D^2 + 2 D M) for its linear maps
  plus 4 x B x N^2 x D for attention scores and values; the backward pass costs twice the
  forward (gradients of both operands of every matmul). Scanned layers count once each; a
  batch split over 8 devices gives each device an eighth."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mmjax.models import transformer  # pylint: disable=g-import-not-at-top
  b, n, d, m, depth = 16, 12, 32, 64, 3
  encoder = transformer.Encoder(d, depth, 4, m, dtype=jnp.float32, rngs=nnx.Rngs(0), scan=True)
  graphdef, params = nnx.split(encoder)
  valid = jnp.ones((b, n), bool)
  step = jax.jit(jax.grad(lambda p, x: nnx.merge(graphdef, p)(x, valid).sum(), argnums=(0, 1)))
  mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  x = jax.device_put(jnp.ones((b, n, d)), jax.NamedSharding(mesh, jax.P("data")))
  forward = depth * (2 * b * n * (4 * d * d + 2 * d * m) + 4 * b * n * n * d)
  analytic = 3 * forward / DEVICES
  assert abs(mfu.step_flops_per_device(step, params, x) / analytic - 1) < 0.02


def test_step_flops_count_the_work_an_axis_repeats(monkeypatch):
  """MFU counts each device's work as it runs: with the batch split over 'data' only on a
  data 2 x fsdp 4 mesh (rules.batch='data', parameters replicated), the four fsdp devices of a
  data group each compute their group's half of the batch, so a device does half the step's
  matmuls, not an eighth; split over both axes, an eighth. Where the compiled program cannot be
  read, the traced count split over the 8 devices."""
  b, d, m, n = 16, 32, 64, 8
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

  def loss(w1, w2, x):
    return jnp.square(jnp.tanh(x @ w1) @ w2).sum()

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  # Forward x @ w1 and h @ w2; backward: h's gradient, w2's, w1's (x's is never needed).
  total = 2 * (2 * b * d * m) + 3 * (2 * b * m * n)
  weights = [jax.device_put(jnp.ones(shape), jax.NamedSharding(mesh, jax.P()))
             for shape in ((d, m), (m, n))]
  for axes, share in (("data", 2), (("data", "fsdp"), 8)):
    x = jax.device_put(jnp.ones((b, d)), jax.NamedSharding(mesh, jax.P(axes)))
    assert mfu.step_flops_per_device(step, *weights, x) == total / share, axes
  monkeypatch.setattr(mfu, "compiled_matmul_flops", lambda text: 0)  # Unreadable matmuls.
  x = jax.device_put(jnp.ones((b, d)), jax.NamedSharding(mesh, jax.P("data")))
  assert mfu.step_flops_per_device(step, *weights, x) == total / 8


def test_compiled_matmul_flops_read_each_backends_matmuls():
  """One device's program as XLA prints it: a dot fused in a scanned loop's body (3 trips), a
  cuBLAS gemm call (GPU; its result first in a tuple), a convolution (TPU writes matmuls as
  some), the costlier branch of a conditional; reductions and loop conditions add nothing."""
  hlo = """HloModule jit_step, entry_computation_layout={(f32[4,8]{1,0})->f32[4,16]{1,0}}

%fused_dot (p0: f32[4,8], p1: f32[8,8]) -> f32[4,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,8]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,8]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (loop: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %loop = (s32[], f32[4,8]{1,0}) parameter(0)
  %x = f32[4,8]{1,0} get-tuple-element(%loop), index=1
  %w = f32[8,8]{1,0} constant({...})
  %f = f32[4,8]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_dot
  %i = s32[] get-tuple-element(%loop), index=0
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%i, %f)
}

%cond (loop.1: (s32[], f32[4,8])) -> pred[] {
  %loop.1 = (s32[], f32[4,8]{1,0}) parameter(0)
  %j = s32[] get-tuple-element(%loop.1), index=0
  %c = s32[] constant(3)
  ROOT %lt = pred[] compare(%j, %c), direction=LT
}

%small (a.1: f32[4,8]) -> f32[4,2] {
  %a.1 = f32[4,8]{1,0} parameter(0)
  %k.1 = f32[8,2]{1,0} constant({...})
  ROOT %dot.2 = f32[4,2]{1,0} dot(%a.1, %k.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%large (a.2: f32[4,8]) -> f32[4,2] {
  %a.2 = f32[4,8]{1,0} parameter(0)
  %k.2 = f32[8,64]{1,0} constant({...})
  %dot.3 = f32[4,64]{1,0} dot(%a.2, %k.2), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %s = f32[4,2]{1,0} slice(%dot.3), slice={[0:4], [0:2]}
}

%add (x.1: f32[], y.1: f32[]) -> f32[] {
  %x.1 = f32[] parameter(0)
  %y.1 = f32[] parameter(1)
  ROOT %sum = f32[] add(%x.1, %y.1)
}

ENTRY %main (arg: f32[4,8]) -> f32[4,16] {
  %arg = f32[4,8]{1,0} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[4,8]{1,0}) tuple(%zero, %arg)
  %loop.2 = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond, body=%body, backend_config=TRIPS
  %h = f32[4,8]{1,0} get-tuple-element(%loop.2), index=1
  %w.2 = f32[8,16]{1,0} constant({...})
  %gemm = (f32[4,16]{1,0}, s8[1024]{0}) custom-call(%h, %w.2), custom_call_target="__cublas$gemm", backend_config=GEMM
  %kernel = f32[8,16]{1,0} constant({...})
  %conv = f32[4,16]{1,0} convolution(%h, %kernel), dim_labels=bf_io->bf
  %p = pred[] constant(true)
  %branch = f32[4,2]{1,0} conditional(%p, %h, %h), true_computation=%small, false_computation=%large
  %r = f32[] reduce(%h, %zero), dimensions={0,1}, to_apply=%add
  ROOT %out = f32[4,16]{1,0} get-tuple-element(%gemm), index=0
}
""".replace("TRIPS", '{"known_trip_count":{"n":"3"}}').replace(
      "GEMM", '{"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":'
      '["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],'
      '"rhs_batch_dimensions":[]}}}')
  loop, gemm, conv = 3 * 2 * 4 * 8 * 8, 2 * 4 * 16 * 8, 2 * 4 * 16 * 8
  larger_branch = 2 * 4 * 64 * 8
  assert mfu.compiled_matmul_flops(hlo) == loop + gemm + conv + larger_branch


@pytest.mark.parametrize("kind,dtype,tflops,variant", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4, "H100 SXM5"),
    ("NVIDIA H100 PCIe", "bfloat16", 756.5, "H100 PCIe"),
    ("NVIDIA H100 PCIe", "float32", 378.0, "H100 PCIe"),
    ("NVIDIA H100 NVL", "bfloat16", 835.5, "H100 NVL"),
    ("NVIDIA H200", "float32", 494.7, "H200 SXM"),
    ("TPU v5 lite", "bfloat16", 197.0, "TPU v5e"),
    ("NVIDIA H100 94GB HBM2e", "bfloat16", None, None),  # Not listed: no MFU, not a guess.
])
def test_peak_by_exact_device_kind(kind, dtype, tflops, variant):
  """The H100 PCIe and NVL have lower peaks than the SXM part whose name they contain: the
  table is matched exactly, and the log line says which peak was used."""
  peak, source = mfu.peak_flops_per_device(dtype, types.SimpleNamespace(platform="gpu",
                                                                         device_kind=kind))
  if tflops is None:
    assert peak is None and repr(kind) in source and "MFU is not reported" in source
  else:
    assert peak == tflops * 1e12
    assert f"dense {dtype} peak of the {variant}" in source and f"{tflops:g} TFLOP/s" in source


def test_useful_flops_of_a_padded_batch_are_the_executed_flops_without_its_padding(
    runlocal_config):
  """Useful FLOPs (the model's count on real, visible tokens, x3 for the backward pass) of a
  batch whose captions are half padding equal the executed FLOPs (the MFU count of the traced
  gradient) of the same batch with the padding cut off; and no padding, no hidden-in-place
  tokens: useful = executed. Images are masked by dropping tokens, so both counts see only the
  visible ones; text is hidden in place, so its mask ratio is 0 here."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mmjax.models import mmt  # pylint: disable=g-import-not-at-top
  b, real = 4, 5
  ratios = {"image": 0.75, "text": 0.0}

  def counts(text_len):
    info = plan.dataset_info(image_shape=(8, 8, 1), text_len=text_len, vocab_size=64,
                             modalities=("image", "text"))
    graphdef, params = nnx.split(mmt.MultimodalTransformer(
        runlocal_config.model, info, rngs=nnx.Rngs(0)))
    batch = {"image": jnp.zeros((b, 8, 8, 1), jnp.uint8),
             "text_ids": jnp.ones((b, text_len), jnp.int32),
             "text_mask": jnp.arange(text_len)[None, :].repeat(b, 0) < real}

    def loss(params):
      model = nnx.merge(graphdef, params)
      out = model(batch, key=jax.random.key(0), mask_ratios=ratios)
      return (out["image"]["pred"].sum() + out["text"]["pred"].sum()
              + sum(e.sum() for e in out["embeddings"].values())), mfu.useful_flops(
                  model, out["passes"])

    executed = mfu.matmul_flops(jax.make_jaxpr(jax.grad(loss, has_aux=True))(params))
    return executed, 3 * float(jax.jit(loss)(params)[1])

  executed_unpadded, useful_unpadded = counts(real)
  _, useful_padded = counts(2 * real)
  assert useful_padded == pytest.approx(useful_unpadded, rel=1e-6)
  # Left out of the useful count: the patch embedding's gradient w.r.t. the pixels is never
  # computed, so executed is a little under 3x forward.
  assert useful_unpadded == pytest.approx(executed_unpadded, rel=0.005)
