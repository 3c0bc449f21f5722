r"""Checks mmjax.interop.big_vision's layout against big_vision's own model code: a random-init
transformers SiglipModel, written as a big_vision .npz by `big_vision.from_siglip`, loaded into
big_vision's `proj.image_text.two_towers` model (flax linen, run here), gives transformers'
image and text embeddings and logits. The tests prove the .npz import against transformers;
this proves the .npz is what big_vision itself reads.

  git clone https://github.com/google-research/big_vision /tmp/big_vision  # a work tree
  .venv/bin/python scripts/check_big_vision_layout.py --big_vision=/tmp/big_vision

Needs the interop environment (./scripts/setup_env.sh --interop). Prints the max abs
differences; exits 1 if any is above 1e-5.
"""
import os
import sys
import tempfile

import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mmjax.interop import big_vision  # noqa: E402  pylint: disable=g-import-not-at-top

_BIG_VISION = flags.DEFINE_string("big_vision", None, "A work tree of google-research/big_vision.",
                                  required=True)
TOL = 1e-5


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, _BIG_VISION.value)
  import flax  # pylint: disable=g-import-not-at-top
  from big_vision.models.proj.image_text import two_towers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  vocab, text_len, image, patch = 99, 12, 16, 4
  config = transformers.SiglipConfig(
      text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, vocab_size=vocab, max_position_embeddings=text_len,
                       projection_size=48),
      vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, image_size=image, patch_size=patch))
  reference = transformers.SiglipModel(config)
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "norm" in name or "position" in name or "logit" in name or "probe" in name:
        p.add_(0.1 * torch.randn_like(p))
  reference.eval()
  with tempfile.TemporaryDirectory() as folder:
    reference.save_pretrained(folder, safe_serialization=True)
    arrays = big_vision.from_siglip(config.to_dict(),
                                    load_file(os.path.join(folder, "model.safetensors")))
    path = os.path.join(folder, "siglip.npz")
    np.savez(path, **arrays)
    with np.load(path) as f:  # As big_vision's utils.load_params reads it: '/'-joined keys.
      flat = {k.removeprefix("params/"): f[k] for k in f.files}
  params = flax.traverse_util.unflatten_dict(flat, sep="/")

  vision, text = config.vision_config, config.text_config
  model = two_towers.Model(
      image=dict(width=vision.hidden_size, depth=vision.num_hidden_layers,
                 mlp_dim=vision.intermediate_size, num_heads=vision.num_attention_heads,
                 patch_size=(patch, patch), pool_type="map", posemb="learn"),
      text=dict(width=text.hidden_size, depth=text.num_hidden_layers,
                mlp_dim=text.intermediate_size, num_heads=text.num_attention_heads,
                vocab_size=vocab),
      out_dim=(None, text.projection_size), bias_init=-10.0, temperature_init=10.0)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, image, image, 3)).astype(np.float32)
  ids = rng.integers(1, vocab, (3, text_len)).astype(np.int32)
  zimg, ztxt, out = model.apply({"params": params}, images, ids)
  with torch.no_grad():
    ref = reference(input_ids=torch.as_tensor(ids, dtype=torch.long),
                    pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)))
  logits = np.asarray(ztxt @ zimg.T * out["t"] + out["b"])
  diffs = {"image embeddings": np.abs(np.asarray(zimg) - ref.image_embeds.numpy()).max(),
           "text embeddings": np.abs(np.asarray(ztxt) - ref.text_embeds.numpy()).max(),
           "logits (text x image)": np.abs(logits - ref.logits_per_text.numpy()).max()
                                    / float(out["t"][0])}
  for name, diff in diffs.items():
    print(f"{name}: max abs difference {diff:.2e} (big_vision vs transformers)")
  if max(diffs.values()) > TOL:
    raise SystemExit(f"Above {TOL}: the .npz layout is not big_vision's.")
  print(f"big_vision's two_towers model reads big_vision.from_siglip's .npz as transformers' "
        f"SiglipModel (within {TOL}).")


if __name__ == "__main__":
  app.run(main)
