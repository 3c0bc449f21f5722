"""Masking ratios, masked-modeling losses, contrastive losses and the objective registry."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from mmjax import modality
from mmjax import objectives
from mmjax.errors import UserError
from mmjax.models import masking
from mmjax.objectives import contrastive, masked_modeling


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

def _ratio(sum_and_count):
  total, count = sum_and_count
  return float(total) / float(count)


def test_masked_image_counts_only_loss_mask():
  rng = np.random.default_rng(0)
  pred, target = (rng.normal(size=(2, 4, 3)).astype(np.float32) for _ in range(2))
  mask = np.array([[True, False, True, False], [False, False, True, False]])
  cfg = ConfigDict(dict(weight=1.0, mask_ratio=0.75, norm_targets=False))
  terms = objectives.get("masked_image")(
      {"image": {"pred": pred, "target": target, "loss_mask": mask}}, cfg)
  assert set(terms.sums) == {"loss", "mse"} and not terms.values
  sse, count = terms.sums["loss"]
  assert count == 3  # Hidden tokens, not values: each token's error is its mean over P.
  np.testing.assert_allclose(sse, np.square(pred - target).mean(-1)[mask].sum(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(terms.sums["mse"]), np.asarray(terms.sums["loss"]))
  # Visible tokens do not count, however wrong their prediction.
  pred2 = np.where(mask[..., None], pred, 100.0).astype(np.float32)
  terms2 = masked_modeling.patch_reconstruction(
      {"pred": pred2, "target": target, "loss_mask": mask}, cfg)
  np.testing.assert_allclose(np.asarray(terms2.sums["loss"]), np.asarray(terms.sums["loss"]),
                             rtol=1e-6)


def test_masked_text_counts_only_loss_mask():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  labels = rng.integers(0, 7, (2, 5))
  mask = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0]], bool)
  loss = objectives.get("masked_text")
  terms = loss({"text": {"pred": logits, "target": labels, "loss_mask": mask}}, ConfigDict(
      dict(weight=0.5, mask_ratio=0.3)))
  assert set(terms.sums) == {"loss", "accuracy"} and not terms.values
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce_bl = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  ce_sum, ce_count = terms.sums["loss"]
  correct, acc_count = terms.sums["accuracy"]
  assert ce_count == acc_count == 4
  np.testing.assert_allclose(ce_sum, ce_bl[mask].sum(), rtol=1e-5)
  assert correct == (logits.argmax(-1) == labels)[mask].sum()
  # Unmasked positions' logits do not matter.
  logits2 = np.where(mask[..., None], logits, 50.0 * rng.normal(size=logits.shape))
  terms2 = loss({"text": {"pred": logits2.astype(np.float32), "target": labels,
                          "loss_mask": mask}}, ConfigDict(dict(weight=0.5, mask_ratio=0.3)))
  np.testing.assert_allclose(_ratio(terms2.sums["loss"]), _ratio(terms.sums["loss"]), rtol=1e-6)
  assert _ratio(terms2.sums["accuracy"]) == _ratio(terms.sums["accuracy"])


def _mae_forward_loss(pred, target, mask):
  """MAE's forward_loss (models_mae.py, norm_pix_loss=True) transcribed to NumPy: torch's
  Tensor.var is unbiased (divides by P - 1)."""
  mean = target.mean(-1, keepdims=True)
  var = target.var(-1, keepdims=True, ddof=1)
  target = (target - mean) / (var + 1.e-6) ** .5
  loss = ((pred - target) ** 2).mean(-1)
  return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("p", [4, 48, 192])
def test_masked_patch_loss_is_maes_formula(p):
  rng = np.random.default_rng(p)
  target = rng.uniform(-1, 1, (3, 10, p)).astype(np.float64)
  pred = rng.normal(size=target.shape)
  mask = rng.random((3, 10)) < 0.75
  out = {"pred": pred.astype(np.float32), "target": target.astype(np.float32), "loss_mask": mask}
  cfg = ConfigDict(dict(weight=1.0, mask_ratio=0.75, norm_targets=True,
                        norm_variance="unbiased"))
  sse, count = objectives.get("masked_image")({"image": out}, cfg).sums["loss"]
  np.testing.assert_allclose(float(sse) / float(count), _mae_forward_loss(pred, target, mask),
                             rtol=1e-5)
  # The other choice is still there, and differs by the variance's P / (P - 1).
  population = ConfigDict(dict(cfg, norm_variance="population"))
  sse_pop, _ = objectives.get("masked_audio")({"audio": out}, population).sums["loss"]
  assert abs(float(sse_pop) - float(sse)) > 1e-4 * float(sse)
  # The reconstruction pictures undo the same normalization: normalized -> patches again.
  mean, std = masked_modeling.patch_stats(out["target"], cfg)
  np.testing.assert_allclose(
      masked_modeling.normalize_patches(out["target"], cfg) * std + mean, target, atol=1e-5)


def test_bad_norm_variance_is_named():
  with pytest.raises(UserError, match="norm_variance='biased'"):
    objectives.check_config("masked_image", ConfigDict(dict(norm_variance="biased")))


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
  mean = {k: _ratio(v) for k, v in terms.sums.items()}
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
    np.testing.assert_allclose(_ratio(terms.sums[pair]),
                               one(z[a][rows], z[b][rows], 10.0), rtol=1e-5)
  total = sum(terms.sums[p][0] for p in pairs) / 16
  np.testing.assert_allclose(_ratio(terms.sums["loss"]), total, rtol=1e-6)


# -- registry ---------------------------------------------------------------------------------

def test_get_by_name_and_unknown_names():
  for name in ("masked_image", "masked_text", "masked_audio", "contrastive"):
    assert callable(objectives.get(name))
  assert objectives.available() == ["classification", "contrastive", "masked_audio",
                                     "masked_image", "masked_text"]
  for bad in ("masked_video", "masking", "../x"):
    with pytest.raises(UserError, match="masked_image"):
      objectives.get(bad)


def test_a_modality_name_with_an_underscore_is_refused():
  """Contrastive pair names join two modality names with '_' (image_text): a registered
  'depth_map' would make 'image_depth_map', whose split gives no two modalities, so its pairs
  were silently left out of the loss. `register` refuses the name with one message instead."""
  class DepthMap(modality.Modality):
    name = "depth_map"

  try:
    with pytest.raises(UserError, match=r"'depth_map' contains '_'.*e\.g\. 'depthmap'"):
      modality.register(DepthMap())
    assert "depth_map" not in modality.names()
  finally:
    modality.unregister("depth_map")  # The registry is global.
