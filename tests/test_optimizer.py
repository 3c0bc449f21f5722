"""The optimizer: weight-decay mask and learning-rate schedule."""
import types

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mmjax.models import mmt
from mmjax.train import optimizer

INFO = types.SimpleNamespace(modalities=("image", "text", "audio"), image_shape=(8, 8, 1),
                             text_len=16, vocab_size=100, audio_len=8000, sample_rate=8000)


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
