"""Ring (chunked) contrastive losses: equal to the dense ones in value and gradient, under
shard_map on meshes and under pmap, with a per-device memory that grows far slower in B."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax.objectives import chunked_contrastive, contrastive
from mmjax.parallel.mesh import make_mesh
from scripts import contrastive_memory

SCALE, BIAS = 10.0, -5.0


def _normalize(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _pairs(batch, dim=32, seed=0):
  """Normalized f32[batch, dim] pairs where row i of z_b is a noisy copy of row i of z_a, so
  positives stand out and the loss is neither trivial nor saturated."""
  rng = np.random.default_rng(seed)
  z_a = rng.normal(size=(batch, dim)).astype(np.float32)
  z_b = z_a + rng.normal(size=(batch, dim)).astype(np.float32)
  return _normalize(jnp.asarray(z_a)), _normalize(jnp.asarray(z_b))


def _dense(kind):
  if kind == "infonce":
    return lambda z_a, z_b, scale, bias: contrastive.infonce(z_a, z_b, scale)
  return contrastive.siglip


def _share(kind):
  if kind == "infonce":
    return lambda z_a, z_b, scale, bias, axis: chunked_contrastive.infonce_share(
        z_a, z_b, scale, axis)
  return chunked_contrastive.siglip_share


def _assert_close(actual, expected):
  # Gradient entries can be ~0: atol for those, rtol for the rest.
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
@pytest.mark.parametrize("mesh_cfg", [{"data": 8}, {"data": 4, "fsdp": 2},
                                      {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_loss_equals_dense(kind, mesh_cfg):
  mesh = make_mesh(mesh_cfg)
  z_a, z_b = _pairs(32)
  batch = NamedSharding(mesh, P(("data", "fsdp")))
  args = (jax.device_put(z_a, batch), jax.device_put(z_b, batch), jnp.float32(SCALE),
          jnp.float32(BIAS))

  def chunked(z_a, z_b, scale, bias):
    return chunked_contrastive.sharded_loss(kind, z_a, z_b, scale, bias, mesh)

  value, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2, 3)))(*args)
  want_value, want_grads = jax.jit(jax.value_and_grad(_dense(kind), argnums=(0, 1, 2, 3)))(
      z_a, z_b, jnp.float32(SCALE), jnp.float32(BIAS))
  _assert_close(value, want_value)
  for g, want in zip(grads, want_grads):
    _assert_close(g, want)
  assert grads[0].sharding.is_equivalent_to(batch, 2)  # Gradients stay batch-sharded.


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_shares_under_pmap(kind):
  """How a pmap train loop uses the shares: each device differentiates its own share / B.
  Cotangents travel back around the ring, so a device's gradient w.r.t. its own rows of z is
  already the full one (not to be psum'd), while replicated inputs (scale, bias, parameters
  that produce z) get partial gradients that add up over the axis."""
  n, b, dim, hidden = jax.device_count(), 4, 32, 16
  size = n * b
  z_a, z_b = _pairs(size, dim)
  x_a, x_b = (jax.random.normal(k, (size, hidden)) for k in jax.random.split(jax.random.key(1)))
  w = jax.random.normal(jax.random.key(2), (hidden, dim)) / hidden**0.5
  share = _share(kind)
  scalars = jnp.float32(SCALE), jnp.float32(BIAS)

  def per_device(z_a, z_b, scale, bias):
    return share(z_a, z_b, scale, bias, "batch") / size

  def per_device_params(w, x_a, x_b, scale, bias):
    return per_device(_normalize(x_a @ w), _normalize(x_b @ w), scale, bias)

  local = lambda x: x.reshape(n, b, *x.shape[1:])
  def value_and_grads(*args):
    value, grads = jax.value_and_grad(per_device, argnums=(0, 1, 2, 3))(*args)
    return lax.psum(value, "batch"), grads

  value, grads = jax.pmap(value_and_grads, axis_name="batch", in_axes=(0, 0, None, None))(
      local(z_a), local(z_b), *scalars)
  w_grad = jax.pmap(jax.grad(per_device_params), axis_name="batch",
                    in_axes=(None, 0, 0, None, None))(w, local(x_a), local(x_b), *scalars)

  dense = _dense(kind)
  want_value, want_grads = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2, 3)))(
      z_a, z_b, *scalars)
  want_w_grad = jax.jit(jax.grad(
      lambda w: dense(_normalize(x_a @ w), _normalize(x_b @ w), *scalars)))(w)
  np.testing.assert_allclose(value, np.full(n, want_value), rtol=1e-5)
  _assert_close(grads[0].reshape(size, dim), want_grads[0])  # Own rows: complete as they are.
  _assert_close(grads[1].reshape(size, dim), want_grads[1])
  _assert_close(grads[2].sum(0), want_grads[2])  # Replicated: summed over the devices.
  _assert_close(grads[3].sum(0), want_grads[3])
  _assert_close(w_grad.sum(0), want_w_grad)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_temp_memory_grows_slower_than_dense_in_batch(kind):
  """Both compiled in this process by this compiler, so only the comparison matters: the ring
  needs less memory at every B, and the gap widens with each doubling (dense holds its B x B/8
  block of logits per device; the ring only (B/8)^2 blocks)."""
  sizes = (64, 128, 256, 512)
  series = contrastive_memory.temp_memory_series(kind, sizes, make_mesh({"data": 8}),
                                                  embed_dim=32)
  print(f"\n{kind} per-device temp bytes for B={sizes} on 8 devices: {series}")
  dense, chunked = np.array(series["dense"], float), np.array(series["chunked"], float)
  assert (chunked < dense).all()
  growth_dense, growth_chunked = dense[1:] / dense[:-1], chunked[1:] / chunked[:-1]
  assert (growth_chunked < growth_dense).all(), (growth_chunked, growth_dense)
  assert dense[-1] / dense[0] > sizes[-1] / sizes[0]  # Dense: faster than linear in B.


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_temp_memory_flat_in_devices(kind):
  """Fixed rows per device (64), more devices: dense memory grows with the global batch, the
  ring's stays put (no all-gather, no stack of traveling chunks kept for backprop)."""
  temps = {}
  for n in (4, 8):
    mesh = make_mesh({"data": n}, devices=jax.devices()[:n])
    temps[n] = contrastive_memory.temp_memory_series(kind, (64 * n,), mesh, embed_dim=32)
  print(f"\n{kind} per-device temp bytes, 64 rows per device, by device count: {temps}")
  dense, chunked = ({n: temps[n][impl][0] for n in temps} for impl in ("dense", "chunked"))
  assert dense[8] > dense[4]
  assert chunked[8] / chunked[4] < dense[8] / dense[4]
  # Flat: the ring gains less than one f32 block of the logits that dense adds per device
  # (its 64 rows against the 4 x 64 new columns), a bound from shapes, not a measurement.
  assert chunked[8] - chunked[4] < 64 * (4 * 64) * 4


# -- Examples lacking a side: only rows with both are pairs -------------------------------------

# Rows 3, 4, 9, ... lack one side (a mixture entry without that modality): 20 of 32 are pairs.
VALID = np.random.default_rng(5).permutation(np.arange(32) < 20)


def _dense_on_pairs(kind, z_a, z_b, scale, bias):
  """The reference: the dense loss of the valid rows alone."""
  return _dense(kind)(z_a[VALID], z_b[VALID], scale, bias)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
@pytest.mark.parametrize("impl", ["dense", "chunked"])
def test_invalid_rows_are_left_out(kind, impl):
  """Dense sums and the ring with a validity mask equal the dense loss of the valid rows alone,
  in value and gradient; invalid rows get zero gradient."""
  mesh = make_mesh({"data": 8})
  z_a, z_b = _pairs(32)
  valid = jnp.asarray(VALID)
  scalars = jnp.float32(SCALE), jnp.float32(BIAS)

  def masked(z_a, z_b, scale, bias):
    if impl == "chunked":
      return chunked_contrastive.sharded_loss(kind, z_a, z_b, scale, bias, mesh, valid=valid)
    if kind == "infonce":
      return contrastive.infonce_sum(z_a, z_b, scale, valid=valid) / VALID.sum()
    return contrastive.siglip_sum(z_a, z_b, scale, bias, valid=valid) / VALID.sum()

  value, grads = jax.jit(jax.value_and_grad(masked, argnums=(0, 1, 2, 3)))(z_a, z_b, *scalars)
  want, want_grads = jax.jit(jax.value_and_grad(
      lambda a, b, s, c: _dense_on_pairs(kind, a, b, s, c), argnums=(0, 1, 2, 3)))(
          z_a, z_b, *scalars)
  _assert_close(value, want)
  for g, w in zip(grads[:2], want_grads[:2]):
    _assert_close(np.asarray(g)[VALID], w[VALID])
    assert not np.asarray(g)[~VALID].any()
  for g, w in zip(grads[2:], want_grads[2:]):
    _assert_close(g, w)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_invalid_rows_left_out_under_pmap(kind):
  """Each device's share with a mask (dense: all-gathered masks; chunked: masks travel with
  the chunks) adds up to the dense loss of the valid rows."""
  n = jax.device_count()
  z_a, z_b = _pairs(32)
  local = lambda x: jnp.asarray(x).reshape(n, 32 // n, *x.shape[1:])
  dense = (lambda a, b, s, c, v: contrastive.infonce_sum(a, b, s, "batch", v)) if (
      kind == "infonce") else (lambda a, b, s, c, v: contrastive.siglip_sum(a, b, s, c, "batch", v))
  chunked = (lambda a, b, s, c, v: chunked_contrastive.infonce_share(a, b, s, "batch", v)) if (
      kind == "infonce") else (lambda a, b, s, c, v: chunked_contrastive.siglip_share(
          a, b, s, c, "batch", v))
  want = _dense_on_pairs(kind, z_a, z_b, SCALE, BIAS) * VALID.sum()
  for share in (dense, chunked):
    got = jax.pmap(lambda a, b, v: lax.psum(share(a, b, SCALE, BIAS, v), "batch"),
                   axis_name="batch")(local(z_a), local(z_b), local(VALID))
    np.testing.assert_allclose(got, np.full(n, want), rtol=1e-5)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_no_pairs_at_all_is_zero_not_nan(kind):
  mesh = make_mesh({"data": 8})
  z_a, z_b = _pairs(32)
  none = jnp.zeros(32, bool)
  fn = lambda a, b: chunked_contrastive.sharded_sum(kind, a, b, SCALE, BIAS, mesh, valid=none)
  value, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(z_a, z_b)
  assert value == 0.0
  assert not np.asarray(grads[0]).any() and not np.asarray(grads[1]).any()
  dense = (contrastive.infonce_sum(z_a, z_b, SCALE, valid=none) if kind == "infonce" else
           contrastive.siglip_sum(z_a, z_b, SCALE, BIAS, valid=none))
  assert dense == 0.0
