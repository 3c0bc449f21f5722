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


def test_random_siglip_matches_transformers_and_exports_back(tmp_path):
  """Import (towers of different shapes, the text head as wide as the image tower), then
  export.write('siglip'): SiglipModel loads it with no missing or unused weights and gives the
  same embeddings and logits."""
  from mmjax.interop import export  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.SiglipConfig(
      text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=TEXT_LEN,
                       projection_size=48),
      vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, image_size=IMAGE, patch_size=4))
  reference = transformers.SiglipModel(config)
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "norm" in name or "position" in name or "logit" in name or "probe" in name:
        p.add_(0.1 * torch.randn_like(p))
  reference.save_pretrained(tmp_path / "in", safe_serialization=True)
  reference.eval()

  cfg = mmt.default_config()
  layout.apply(cfg, siglip.model_config(config.to_dict()))
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3), "text": TEXT_LEN}, vocab_size=VOCAB)
  model = models.make(cfg, info, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{tmp_path / 'in'}", params, params, cfg, info)
  assert {n.split("/")[0] for n in report["new"]} == {"decoder"}
  _big_vision_gives_the_same_parameters(tmp_path, params, cfg, info)
  model = nnx.merge(graphdef, params, rest)

  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, IMAGE, IMAGE, 3)).astype(np.float32)
  ids = rng.integers(1, VOCAB, (3, TEXT_LEN)).astype(np.int32)  # Full rows, as SigLIP reads.
  mask = np.ones_like(ids, bool)
  z = jax.device_get(jax.jit(model.embed)({"image": images, "text_ids": ids, "text_mask": mask}))
  scale = float(np.exp(params["logit_scale"]["image_text"].value))
  bias = float(params["logit_bias"]["image_text"].value)
  flat = {init_from.param_names.name(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  exported, loading = transformers.SiglipModel.from_pretrained(
      export.write("siglip", flat, cfg, str(tmp_path / "out")), output_loading_info=True)
  assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  for ref in (reference, exported.eval()):
    with torch.no_grad():
      out = ref(input_ids=torch.as_tensor(ids, dtype=torch.long),
                pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(z["image"], out.image_embeds.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(z["text"], out.text_embeds.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(scale * z["text"] @ z["image"].T + bias,
                               out.logits_per_text.numpy(), atol=TOL * scale, rtol=0)


def _big_vision_gives_the_same_parameters(tmp_path, imported, cfg, info):
  """The same SigLIP as a big_vision .npz (big_vision.from_siglip; its text blocks scanned, as
  big_vision saves with scan=True): config.init_from=big_vision:<npz> gives exactly the
  parameters of the transformers import, and the same report."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  from mmjax import interop  # pylint: disable=g-import-not-at-top
  from mmjax.interop import big_vision  # pylint: disable=g-import-not-at-top
  hf_config = interop.read_config(tmp_path / "in")
  arrays = big_vision.from_siglip(hf_config, load_file(tmp_path / "in" / "model.safetensors"))
  layers = hf_config["text_config"]["num_hidden_layers"]
  for key in [k for k in arrays if "txt/Encoder_0/encoderblock_0/" in k]:
    rest = key.split("encoderblock_0/")[1]
    arrays[f"params/txt/Encoder_0/encoderblock/{rest}"] = np.stack(
        [arrays.pop(f"params/txt/Encoder_0/encoderblock_{i}/{rest}") for i in range(layers)])
  np.savez(tmp_path / "siglip.npz", **arrays)
  params, report = init_from.restore_imported(f"big_vision:{tmp_path / 'siglip.npz'}",
                                              imported, imported, cfg, info)
  assert {n.split("/")[0] for n in report["new"]} == {"decoder"} and not report["unused"]
  want = dict(jax.tree_util.tree_flatten_with_path(imported)[0])
  for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    np.testing.assert_array_equal(value, want[path], err_msg=init_from.param_names.name(path))
