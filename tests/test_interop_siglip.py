"""HF SigLIP checkpoints into mmjax towers (mmjax.interop.siglip), against transformers'
SiglipModel (torch, float32) with random weights: the normalized image and text embeddings and
the logits, logit bias included. Needs the interop environment: ./scripts/setup_env.sh --interop."""
import jax
import numpy as np
import pytest
from flax import nnx

from mmjax import models
from mmjax.data import info as info_lib
from mmjax.interop import layout
from mmjax.interop import siglip
from mmjax.models import mmt
from mmjax.train import init_from

torch = pytest.importorskip(
    "torch", reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")
transformers = pytest.importorskip(
    "transformers",
    reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")

TOL = 1e-5
VOCAB, TEXT_LEN, IMAGE = 99, 12, 16


def test_random_siglip_matches_transformers(tmp_path):
  torch.manual_seed(0)
  tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
  config = transformers.SiglipConfig(
      text_config=dict(tower, vocab_size=VOCAB, max_position_embeddings=TEXT_LEN),
      vision_config=dict(tower, image_size=IMAGE, patch_size=4))
  reference = transformers.SiglipModel(config)
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "norm" in name or "position" in name or "logit" in name or "probe" in name:
        p.add_(0.1 * torch.randn_like(p))
  reference.save_pretrained(tmp_path, safe_serialization=True)
  reference.eval()

  cfg = mmt.default_config()
  layout.apply(cfg, siglip.model_config(config.to_dict()))
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3), "text": TEXT_LEN}, vocab_size=VOCAB)
  model = models.make(cfg, info, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{tmp_path}", params, params, cfg, info)
  assert {n.split("/")[0] for n in report["new"]} == {"decoder"}
  model = nnx.merge(graphdef, params, rest)

  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, IMAGE, IMAGE, 3)).astype(np.float32)
  ids = rng.integers(1, VOCAB, (3, TEXT_LEN)).astype(np.int32)  # Full rows, as SigLIP reads.
  mask = np.ones_like(ids, bool)
  z = jax.device_get(jax.jit(model.embed)({"image": images, "text_ids": ids, "text_mask": mask}))
  scale = float(np.exp(params["logit_scale"]["image_text"].value))
  bias = float(params["logit_bias"]["image_text"].value)
  with torch.no_grad():
    out = reference(input_ids=torch.as_tensor(ids, dtype=torch.long),
                    pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(z["image"], out.image_embeds.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(z["text"], out.text_embeds.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(scale * z["text"] @ z["image"].T + bias,
                             out.logits_per_text.numpy(), atol=TOL * scale, rtol=0)
