"""Masking ratios, masked-modeling losses, contrastive losses and the objective registry."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from mmjax import objectives
from mmjax.errors import UserError
from mmjax.objectives import contrastive, masked_modeling, masking


# -- masking ----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_tokens,ratio", [(16, 0.75), (60, 0.75), (16, 0.0), (10, 0.33)])
def test_random_keep_exact_count_and_inverse(num_tokens, ratio):
  b = 5
  keep_bk, restore_bn = masking.random_keep(jax.random.split(jax.random.key(1), b), num_tokens, ratio)
  k = num_tokens - round(ratio * num_tokens)
  assert keep_bk.shape == (b, k)
  for row_keep, row_restore in zip(np.asarray(keep_bk), np.asarray(restore_bn)):
    assert len(set(row_keep)) == k  # Unique kept indices.
    assert sorted(row_restore) == list(range(num_tokens))  # A permutation ...
    np.testing.assert_array_equal(row_restore[row_keep], np.arange(k))  # ... inverting keep.
  hidden = np.asarray(masking.hidden_from_restore(restore_bn, k))
  np.testing.assert_array_equal(hidden.sum(1), num_tokens - k)
  # Gather then restore puts every kept token back in place and the fill everywhere else.
  x_bnd = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.float32)[None, :, None],
                           (b, num_tokens, 3))
  restored = masking.restore_tokens(masking.gather_tokens(x_bnd, keep_bk), jnp.full((3,), -1.0),
                                    restore_bn)
  np.testing.assert_array_equal(restored, np.where(hidden[..., None], -1.0, x_bnd))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_hide_valid_exact_count_among_valid(ratio):
  lengths = np.array([16, 10, 7, 3, 2, 1])
  valid = np.arange(16)[None] < lengths[:, None]
  hidden = np.asarray(masking.hide_valid(jax.random.split(jax.random.key(2), len(valid)),
                                             jnp.asarray(valid), ratio))
  expected = [min(round(ratio * n), n - 1) for n in lengths]
  np.testing.assert_array_equal(hidden.sum(1), expected)
  assert not (hidden & ~valid).any()  # Padding is never hidden.


# -- masked modeling --------------------------------------------------------------------------

def test_normalize_patches_zero_mean_unit_variance():
  t = np.random.default_rng(0).normal(3.0, 5.0, (2, 6, 12)).astype(np.float32)
  n = np.asarray(masked_modeling.normalize_patches(jnp.asarray(t)))
  np.testing.assert_allclose(n.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(n.var(-1), 1.0, atol=1e-4)


def test_masked_mse_counts_only_loss_mask():
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
  mask = np.array([[True, False, True, False], [False, False, True, False]])
  loss = masked_modeling.masked_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
  np.testing.assert_allclose(loss, np.square(pred - target).mean(-1)[mask].mean(), rtol=1e-6)
  pred2 = np.where(mask[..., None], pred, 100.0)
  np.testing.assert_allclose(masked_modeling.masked_mse(pred2, target, mask), loss, rtol=1e-6)


def test_masked_cross_entropy_counts_only_loss_mask():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, (2, 5))
  mask = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0]], bool)
  ce, acc = masked_modeling.masked_cross_entropy(logits, labels, mask)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ref = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0][mask].mean()
  np.testing.assert_allclose(ce, ref, rtol=1e-5)
  np.testing.assert_allclose(acc, (logits.argmax(-1) == labels)[mask].mean())
  logits2 = np.where(mask[..., None], logits, 50.0 * rng.normal(size=logits.shape))
  ce2, acc2 = masked_modeling.masked_cross_entropy(logits2.astype(np.float32), labels, mask)
  np.testing.assert_allclose(ce2, ce, rtol=1e-6)
  assert acc2 == acc


def test_masked_image_uses_normalized_targets():
  rng = np.random.default_rng(0)
  target = rng.uniform(-1, 1, (2, 4, 12)).astype(np.float32)
  out = {"image": {"pred": masked_modeling.normalize_patches(target), "target": target,
                   "loss_mask": np.ones((2, 4), bool)}}
  loss_fn = lambda cfg: masked_modeling.mean(objectives.get("masked_image")(out, cfg).sums["loss"])
  assert loss_fn(ConfigDict(dict(weight=1.0, mask_ratio=0.75, norm_targets=True))) < 1e-10
  assert loss_fn(ConfigDict(dict(weight=1.0, mask_ratio=0.75, norm_targets=False))) > 0.1


# -- contrastive ------------------------------------------------------------------------------

def _aligned(b=4, e=8):
  z = np.eye(b, e, dtype=np.float32)  # Orthonormal: every non-pair has similarity 0.
  return z, z.copy()


def test_infonce_aligned_is_near_zero_and_permutation_raises():
  z_a, z_b = _aligned()
  aligned = contrastive.infonce(z_a, z_b, 100.0)
  assert aligned < 1e-6
  assert contrastive.infonce(z_a, z_b[::-1], 100.0) > 10.0


def test_infonce_matches_hand_computation():
  z_a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  z_b = np.array([[0.6, 0.8], [1.0, 0.0]], np.float32)
  # scale * z_a @ z_b.T = [[1.2, 2.0], [1.6, 0.0]]; rows: a->b, columns: b->a.
  lse = lambda *xs: math.log(sum(math.exp(x) for x in xs))
  a_to_b = (lse(1.2, 2.0) - 1.2) + (lse(1.6, 0.0) - 0.0)
  b_to_a = (lse(1.2, 1.6) - 1.2) + (lse(2.0, 0.0) - 0.0)
  expected = 0.5 * (a_to_b / 2 + b_to_a / 2)
  np.testing.assert_allclose(contrastive.infonce(z_a, z_b, 2.0), expected, rtol=1e-5)


def test_siglip_aligned_near_minimum_and_permutation_raises():
  z_a, z_b = _aligned()
  # Diagonal logits 20 - 10 = 10, off-diagonal -10: every term is log(1 + e^-10).
  aligned = contrastive.siglip(z_a, z_b, 20.0, -10.0)
  np.testing.assert_allclose(aligned, 4 * math.log1p(math.exp(-10.0)), rtol=1e-4)
  assert aligned < 1e-3
  assert contrastive.siglip(z_a, z_b[::-1], 20.0, -10.0) > 10.0


def test_siglip_matches_formula():
  rng = np.random.default_rng(0)
  z_a, z_b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  z_a /= np.linalg.norm(z_a, axis=1, keepdims=True)
  z_b /= np.linalg.norm(z_b, axis=1, keepdims=True)
  scale, bias = 7.0, -3.0
  expected = sum(np.log1p(np.exp(-(1.0 if i == j else -1.0) * (scale * z_a[i] @ z_b[j] + bias)))
                 for i in range(3) for j in range(3)) / 3
  got = contrastive.siglip(z_a.astype(np.float32), z_b.astype(np.float32), scale, bias)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_contrastive_loss_is_mean_over_pairs(kind):
  rng = np.random.default_rng(0)
  z = {m: rng.normal(size=(4, 8)).astype(np.float32) for m in ("image", "text", "audio")}
  z = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in z.items()}
  pairs = ("image_text", "image_audio", "text_audio")
  outputs = {"embeddings": z, "logit_scale": {p: 10.0 for p in pairs},
             "logit_bias": {p: -10.0 for p in pairs}}
  terms = objectives.get("contrastive")(
      outputs, ConfigDict(dict(weight=1.0, type=kind, view="clean", impl="dense")))
  mean = {k: masked_modeling.mean(v) for k, v in terms.sums.items()}
  np.testing.assert_allclose(mean["loss"], np.mean([mean[p] for p in pairs]), rtol=1e-6)
  one = contrastive.infonce if kind == "infonce" else (
      lambda a, b, s: contrastive.siglip(a, b, s, -10.0))
  np.testing.assert_allclose(mean["image_audio"], one(z["image"], z["audio"], 10.0), rtol=1e-6)
  assert terms.values["image_text/logit_scale"] == 10.0


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_contrastive_pairs_only_where_both_sides_exist(kind):
  """Rows 0-1 lack audio, rows 4-5 lack image: each pair's loss is the loss of the rows that have
  both alone, and 'loss' averages over every (row, pair) that exists."""
  rng = np.random.default_rng(0)
  z = {m: rng.normal(size=(8, 8)).astype(np.float32) for m in ("image", "text", "audio")}
  z = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in z.items()}
  present = {"image": np.arange(8) // 2 != 2, "text": np.ones(8, bool),
             "audio": np.arange(8) // 2 != 0}
  pairs = ("image_text", "image_audio", "text_audio")
  outputs = {"embeddings": z, "present": present, "logit_scale": {p: 10.0 for p in pairs},
             "logit_bias": {p: -10.0 for p in pairs}}
  terms = objectives.get("contrastive")(
      outputs, ConfigDict(dict(weight=1.0, type=kind, view="clean", impl="dense")))
  one = contrastive.infonce if kind == "infonce" else (
      lambda a, b, s: contrastive.siglip(a, b, s, -10.0))
  for pair, rows in (("image_text", [0, 1, 2, 3, 6, 7]), ("image_audio", [2, 3, 6, 7]),
                     ("text_audio", [2, 3, 4, 5, 6, 7])):
    a, b = pair.split("_")
    assert terms.sums[pair][1] == len(rows)
    np.testing.assert_allclose(masked_modeling.mean(terms.sums[pair]),
                               one(z[a][rows], z[b][rows], 10.0), rtol=1e-5)
  total = sum(terms.sums[p][0] for p in pairs) / 16
  np.testing.assert_allclose(masked_modeling.mean(terms.sums["loss"]), total, rtol=1e-6)


# -- registry ---------------------------------------------------------------------------------

def test_get_by_name_and_unknown_names():
  for name in ("masked_image", "masked_text", "masked_audio", "contrastive"):
    assert callable(objectives.get(name))
  assert objectives.available() == ["classification", "contrastive", "masked_audio",
                                     "masked_image", "masked_text"]
  for bad in ("masked_video", "masking", "../x"):
    with pytest.raises(UserError, match="masked_image"):
      objectives.get(bad)
