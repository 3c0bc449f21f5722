r"""Checks mmjax.interop.open_clip against open_clip's own model code: a random-init open_clip
CLIP (ViT-B/32-shaped: the text tower narrower and shallower, QuickGELU), its state dict saved
as .safetensors with its open_clip_config.json, imported with config.init_from=open_clip:FILE,
gives open_clip's normalized image and text embeddings and logits.

  git clone https://github.com/mlfoundations/open_clip /tmp/open_clip  # a source tree
  .venv/bin/python scripts/check_open_clip_layout.py --open_clip=/tmp/open_clip

open_clip cannot be installed on the CPU dev machines (it needs torchvision, whose registry
build needs CUDA torch), so its model code runs from the source tree without its package
__init__ (which builds image transforms), and its utils' one torchvision import
(FrozenBatchNorm2d, for ResNet towers) gets a stand-in class. Nothing of torchvision runs in a
ViT CLIP. Needs the interop environment. Exits 1 if a difference is above 1e-5.
"""
import json
import os
import sys
import tempfile
import types

import numpy as np
from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

_OPEN_CLIP = flags.DEFINE_string("open_clip", None, "A source tree of mlfoundations/open_clip.",
                                 required=True)
TOL = 1e-5


def _open_clip_model(tree):
  """open_clip.model from a source tree, without the package __init__ or torchvision."""
  import importlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top,unused-import  (sees no torchvision)
  stand_in = types.ModuleType("torchvision")
  stand_in.ops = types.ModuleType("torchvision.ops")
  stand_in.ops.misc = types.ModuleType("torchvision.ops.misc")
  stand_in.ops.misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
  for name, module in (("torchvision", stand_in), ("torchvision.ops", stand_in.ops),
                       ("torchvision.ops.misc", stand_in.ops.misc)):
    sys.modules.setdefault(name, module)
  package = types.ModuleType("open_clip")
  package.__path__ = [os.path.join(tree, "src", "open_clip")]
  sys.modules["open_clip"] = package
  return importlib.import_module("open_clip.model")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from mmjax import models  # pylint: disable=g-import-not-at-top
  from mmjax.data import info as info_lib  # pylint: disable=g-import-not-at-top
  from mmjax.interop import clip, layout, open_clip  # pylint: disable=g-import-not-at-top
  from mmjax.models import mmt  # pylint: disable=g-import-not-at-top
  from mmjax.train import init_from  # pylint: disable=g-import-not-at-top

  oc = _open_clip_model(_OPEN_CLIP.value)
  vocab, text_len, image, eos = 99, 12, 16, 98
  model_cfg = {"embed_dim": 24, "quick_gelu": True,
               "vision_cfg": {"image_size": image, "patch_size": 4, "width": 48, "layers": 3,
                              "head_width": 12, "mlp_ratio": 4.0},
               "text_cfg": {"context_length": text_len, "vocab_size": vocab, "width": 32,
                            "heads": 2, "layers": 2, "mlp_ratio": 4.0}}
  torch.manual_seed(0)
  reference = oc.CLIP(**model_cfg)
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "ln" in name or "embedding" in name:
        p.add_(0.1 * torch.randn_like(p))
  reference.eval()
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "open_clip_model.safetensors")
    save_file({k: v.detach().numpy().copy() for k, v in reference.state_dict().items()
               if k != "attn_mask"}, path)
    with open(os.path.join(folder, open_clip.CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump({"model_cfg": model_cfg}, f)
    hf_like = open_clip.hf_like_config(open_clip.read(path), path)
    cfg = mmt.default_config()
    layout.apply(cfg, clip.model_config(hf_like))
    info = info_lib.planned({"image": (image, image, 3), "text": text_len}, vocab_size=vocab)
    model = models.make(cfg, info, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, report = init_from.restore_imported(f"open_clip:{path}", params, params, cfg, info)
  print(init_from.summary(report))
  model = nnx.merge(graphdef, params, rest)

  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, image, image, 3)).astype(np.float32)
  lengths = np.array([3, 7, text_len, 5])
  mask = np.arange(text_len)[None] < lengths[:, None]
  ids = np.where(mask, rng.integers(1, eos - 1, (4, text_len)), 0).astype(np.int32)
  ids[np.arange(4), lengths - 1] = eos  # Rows end in the end-of-text token, the largest id.
  z = jax.device_get(jax.jit(model.embed)({"image": images, "text_ids": ids, "text_mask": mask}))
  with torch.no_grad():
    zi = reference.encode_image(torch.as_tensor(images.transpose(0, 3, 1, 2)), normalize=True)
    zt = reference.encode_text(torch.as_tensor(ids, dtype=torch.long), normalize=True)
    scale = reference.logit_scale.exp().item()
  logits = scale * z["image"] @ z["text"].T
  diffs = {"image embeddings": np.abs(z["image"] - zi.numpy()).max(),
           "text embeddings": np.abs(z["text"] - zt.numpy()).max(),
           "logits / scale": np.abs(logits - scale * (zi @ zt.T).numpy()).max() / scale}
  for name, diff in diffs.items():
    print(f"{name}: max abs difference {diff:.2e} (mmjax vs open_clip)")
  if max(diffs.values()) > TOL:
    raise SystemExit(f"Above {TOL}: the import does not give open_clip's model.")
  print(f"config.init_from=open_clip: gives open_clip's CLIP (within {TOL}).")


if __name__ == "__main__":
  app.run(main)
