"""The optimizer: weight-decay mask and learning-rate schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from mmjax import objectives
from mmjax.data import info as data_info
from mmjax.models import mmt
from mmjax.train import optimizer

INFO = data_info.planned({"image": (8, 8, 1), "text": 16, "audio": 8000}, vocab_size=100,
                         sample_rate=8000)


@pytest.fixture(scope="module")
def decays_by_path():
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: mmt.MultimodalTransformer(mmt.default_config(), INFO,
                                                             rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  mask = optimizer.decay_mask(params)
  return {"/".join(str(getattr(k, "key", k)) for k in path).removesuffix("/.value"): bool(v)
          for path, v in jax.tree_util.tree_leaves_with_path(mask)}


def test_decay_only_on_weight_matrices(decays_by_path):
  decayed = {p for p, d in decays_by_path.items() if d}
  kept = {p for p, d in decays_by_path.items() if not d}
  # Weight matrices decay, including the token embedding (content, not position).
  assert any(p.endswith("patch_embed/kernel") for p in decayed)
  assert any("token_embed" in p for p in decayed)
  assert any("mlp" in p.lower() and p.endswith("kernel") for p in decayed)
  # Norms, biases, position/type embeddings, the mask token and contrastive scales do not.
  for p in kept:
    assert any(n in p for n in ("bias", "scale", "pos", "type", "mask_token", "logit")), p
  assert any("pos_embed" in p for p in kept) and any("type_embed" in p for p in kept)
  assert any(p.endswith("scale") for p in kept) and any(p.endswith("bias") for p in kept)
  assert not any("bias" in p or "pos_embed" in p or "type_embed" in p for p in decayed)


def test_warmup_cosine_schedule():
  cfg = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1,
                                       weight_decay=0.05, b1=0.9, b2=0.95, grad_clip=1.0))
  _, lr = optimizer.make(cfg, total_steps=110)
  np.testing.assert_allclose(lr(0), 0.0)
  np.testing.assert_allclose(lr(5), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(lr(10), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(lr(60), 0.55e-3, rtol=1e-5)  # Half-way down the cosine.
  np.testing.assert_allclose(lr(110), 1e-4, rtol=1e-5)


def _decays(scan_layers):
  """{path: decays} of the model's parameters, a scanned Stack's blocks unstacked into
  blocks/<i>/... rows, so the scanned and the unrolled model name the same parameters."""
  config = mmt.default_config()
  config.scan_layers = scan_layers
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: mmt.MultimodalTransformer(config, INFO, rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  out = {}
  shapes = [x.shape for x in jax.tree.leaves(params)]
  for (path, decays), shape in zip(
      jax.tree_util.tree_leaves_with_path(optimizer.decay_mask(params)), shapes, strict=True):
    name = "/".join(str(getattr(k, "key", k)) for k in path).removesuffix("/.value")
    name = name.removesuffix("/value")
    if scan_layers and "/blocks/blocks/" in name:
      head, tail = name.split("/blocks/blocks/")
      for i in range(shape[0]):  # One row per layer of the stacked leaf.
        out[f"{head}/blocks/blocks/{i}/{tail}"] = bool(decays)
    else:
      out[name] = bool(decays)
  return out


def test_decay_mask_is_the_same_scanned_and_unrolled():
  """Decay follows what a parameter is: a LayerNorm scale stacked to [depth, width] by a
  scanned Stack is still not decayed."""
  unrolled, scanned = _decays(False), _decays(True)
  assert unrolled == scanned
  assert not any(d for p, d in scanned.items() if "norm" in p)
  assert any(d for p, d in scanned.items() if "/blocks/blocks/" in p)  # Kernels still decay.


@pytest.mark.slow  # Trains.
def test_logit_scale_above_the_cap_comes_back_and_keeps_learning():
  """CLIP clamps the temperature parameter after the update: a log scale initialised above
  log(100) is at the cap after one step, and its gradient is not cut by a forward clamp."""
  config = mmt.default_config()
  config.logit_scale_init = 500.0
  model = mmt.MultimodalTransformer(config, INFO, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (4, 8, 8, 1)).astype(np.uint8),
           "text_ids": rng.integers(5, 100, (4, 16)).astype(np.int32),
           "text_mask": np.ones((4, 16), bool)}
  cfg = ml_collections.ConfigDict(dict(type="infonce", view="clean", impl="dense"))

  def loss(params):
    out = nnx.merge(graphdef, params)(batch, key=jax.random.key(0), mask_ratios={},
                                      embeddings="clean")
    terms = objectives.get("contrastive")(out, cfg)
    return terms.sums["loss"][0] / terms.sums["loss"][1]

  grad_fn = jax.jit(jax.grad(loss))
  grads = grad_fn(params)
  assert float(grads["logit_scale"]["image_text"][...]) != 0.0  # Still learning above the cap.
  opt_cfg = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0,
                                           weight_decay=0.05, b1=0.9, b2=0.95, grad_clip=1.0))
  tx, _ = optimizer.make(opt_cfg, total_steps=10)
  opt_state = tx.init(params)
  cap = np.float32(np.log(optimizer.MAX_LOGIT_SCALE))  # The parameter is float32.
  for step in (1, 2):
    updates, opt_state = tx.update(grad_fn(params), opt_state, params)
    params = optax.apply_updates(params, updates)
    log_scale = np.asarray(params["logit_scale"]["image_text"][...])
    if step == 1:  # From log(500), far above: the update is cut to land on the cap exactly.
      assert log_scale == cap, (log_scale, cap)
    assert log_scale <= cap, (step, log_scale, cap)
  # Below the cap, a gradient that asks for a smaller scale moves it down.
  g = jax.tree.map(jnp.zeros_like, params)
  g["logit_scale"]["image_text"] = g["logit_scale"]["image_text"].replace(
      jnp.ones((), jnp.float32))
  updates, _ = tx.update(g, opt_state, params)
  moved = optax.apply_updates(params, updates)
  assert float(moved["logit_scale"]["image_text"][...]) < log_scale
