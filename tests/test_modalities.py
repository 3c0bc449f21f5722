"""A fourth modality from this file alone, without editing mmjax/: "depth", a single-channel
image with its own patch tokenizer and masked-modeling objective, registered here. A manifest
with an image, a caption, a sound and a depth map per row builds a dataset
(mmjax.data.build), which trains 3 steps by name (masked modeling of all four, contrastive
pairs of depth with each of the other three) and runs retrieval on it."""
import types

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from PIL import Image
from scipy.io import wavfile

import numpy_metrics
from mmjax import models
from mmjax import modality
from mmjax import objectives
from mmjax.data import build
from mmjax.data import loader
from mmjax.models import posemb
from mmjax.models import tokenizers
from mmjax.models.transformer import EMBED_INIT, layer_norm, linear, partitioned
from mmjax.objectives import masked_modeling
from mmjax.train import trainer

SIZE, RATE = 8, 8000
CLASSES = ("near", "far")


class DepthTokenizer(nnx.Module):
  """uint8 depth maps [B, H, W, 1] -> p x p patches in [-1, 1], 2-D sin-cos positions."""
  input_key = "depth"
  out_axis = "patch"

  def __init__(self, shape, patch, width, *, dtype, rngs):
    self.patch, self.grid = patch, (shape[0] // patch, shape[1] // patch)
    self.out_dim, self.width = patch * patch, width
    self.patch_embed = linear(self.out_dim, width, ("patch", "embed"), dtype=dtype, rngs=rngs)
    self.type_embed = nnx.Param(partitioned(EMBED_INIT, "embed")(rngs.params(), (width,)))
    self.norm = layer_norm(width, dtype=dtype, rngs=rngs)

  def __call__(self, batch):
    depth = batch["depth"].astype(jnp.float32) / 255.0 * 2.0 - 1.0
    patches = einops.rearrange(depth, "b (h p) (w q) 1 -> b (h w) (p q)", p=self.patch,
                               q=self.patch)
    x = self.patch_embed(patches) + posemb.sincos_2d(*self.grid, self.width) + self.type_embed[...]
    return tokenizers.Tokens(x=self.norm(x), valid=jnp.ones(patches.shape[:2], bool),
                             target=patches, grid=self.grid)


class Depth(modality.Modality):
  name = feature = "depth"
  dtypes = {"depth": np.uint8}

  def example_shapes(self, size):
    return {"depth": tuple(size)}

  def stored_shapes(self, data_cfg, features):
    return {"depth": tuple(features["depth"].shape)}

  def default_pp(self, data_cfg, shapes, *, train):
    return ["decode(key='depth', channels=1)"]

  def build_features(self, opts):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return {"depth": tfds.features.Image(shape=(opts.image_size, opts.image_size, 1))}

  def read(self, value, opts):
    with open(value, "rb") as f:  # Stored as the PNG it is; decoded by the loader's op.
      return {"depth": f.read()}, None

  def model_config(self):
    return ml_collections.ConfigDict(dict(patch_size=4))

  def token_grid(self, model_cfg, info):
    h, w, _ = info.shapes["depth"]
    return (h // model_cfg.depth.patch_size, w // model_cfg.depth.patch_size)

  def out_dim(self, model_cfg, info):
    return model_cfg.depth.patch_size ** 2

  def tokenizer(self, model_cfg, info, width, *, dtype, rngs):
    return DepthTokenizer(info.shapes["depth"], model_cfg.depth.patch_size, width, dtype=dtype,
                          rngs=rngs)


MASKED_DEPTH = types.SimpleNamespace(
    MODALITY="depth", check_config=masked_modeling.check_config,
    loss=lambda outputs, cfg, ctx=None: masked_modeling.patch_reconstruction(outputs["depth"],
                                                                             cfg))


@pytest.fixture(scope="module")
def depth_registered():
  modality.register(Depth())
  objectives.register("masked_depth", MASKED_DEPTH)
  yield
  modality.unregister("depth")
  objectives.unregister("masked_depth")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
  """24 rows of two classes: bright or dark image, low or high tone, a depth ramp rising to
  the right or to the bottom; 16 train, 8 test."""
  root = tmp_path_factory.mktemp("depth_pairs")
  rng = np.random.default_rng(0)
  ramp = np.linspace(0, 255, SIZE)
  lines = []
  for i in range(24):
    c = i % 2
    Image.fromarray((rng.random((SIZE, SIZE)) * (100 + 155 * c)).astype(np.uint8)).save(
        root / f"{i}.png")
    depth = np.broadcast_to(ramp[None, :] if c else ramp[:, None], (SIZE, SIZE))
    Image.fromarray((depth * rng.uniform(0.7, 1.0)).astype(np.uint8)).save(root / f"{i}_d.png")
    t = np.arange(RATE // 2) / RATE
    wavfile.write(root / f"{i}.wav", RATE,
                  (12000 * np.sin(2 * np.pi * (300 + 500 * c + 7 * i) * t)).astype(np.int16))
    lines.append(dict(image=f"{i}.png", depth=f"{i}_d.png", audio=f"{i}.wav",
                      text=f"a {CLASSES[c]} scene {i}", label=CLASSES[c],
                      split="train" if i < 16 else "test"))
  import json  # pylint: disable=g-import-not-at-top
  (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  return str(root / "pairs.jsonl")


def _test_embeddings(config, info, step_dir):
  """({modality: f32[N, E]}, labels int[N]) of the whole test split, by the model restored
  from the checkpoint in `step_dir` with orbax alone, in one batch."""
  graphdef, params = nnx.split(nnx.eval_shape(
      lambda: models.make(config.model, info, rngs=nnx.Rngs(0))), nnx.Param)
  saved = ocp.StandardCheckpointer().restore(str(step_dir / "state"))["params"]
  # Saved nnx variables are {"value": array}.
  unwrap = lambda t: (t["value"] if set(t) == {"value"} else {k: unwrap(v) for k, v in t.items()}
                      ) if isinstance(t, dict) else t
  nnx.replace_by_pure_dict(params, unwrap(saved))
  split = next(loader.split_batches(config.data, info, "test", info.split_sizes["test"]))
  assert split["valid"].all()
  batch = {k: split[k] for k in modality.batch_keys(info.modalities)}
  z = jax.device_get(jax.jit(lambda p, b: nnx.merge(graphdef, p).embed(b))(params, batch))
  return z, split["label"]


@pytest.mark.slow  # End-to-end training.
def test_a_fourth_modality_trains_and_retrieves(depth_registered, manifest, runlocal_config,
                                                 tmp_path):
  del depth_registered
  data_dir = str(tmp_path / "data")
  opts = build.Options(image_size=SIZE, channels=1, sample_rate=RATE)
  _, kept, rejected, _ = build.build(manifest, "depth_pairs", data_dir, opts)
  assert kept == {"train": 16, "validation": 0, "test": 8} and not rejected

  config = runlocal_config.copy_and_resolve_references()
  config.data.name, config.data.dir, config.data.audio_seconds = "depth_pairs", data_dir, 0.5
  config.total_steps, config.batch_size, config.log_every = 3, 8, 1
  config.eval_every = config.checkpoint_every = 3
  config.model.scan_layers = True
  config.model.depth = Depth().model_config()
  config.objectives.masked_depth = ml_collections.ConfigDict(dict(
      weight=1.0, mask_ratio=0.5, norm_targets=True))
  config.evals = ml_collections.ConfigDict(dict(retrieval=dict(
      type="retrieval", split="test", batch_size=8)))
  info = loader.prepare(config.data)
  assert info.modalities == ("image", "text", "audio", "depth")
  assert info.shapes["depth"] == (SIZE, SIZE, 1)

  metrics = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  # R@1 of every pair with depth, recomputed in NumPy from the restored model's embeddings of
  # the test split (as tests/test_train.py does).
  z, labels = _test_embeddings(config, info, tmp_path / "run" / "checkpoints" / "3")
  for other in ("image", "text", "audio"):
    for a, b in ((other, "depth"), ("depth", other)):
      name = f"eval/retrieval/{a}_to_{b}/r@1"
      numpy_metrics.check_recall(metrics[name], z[a] @ z[b].T,
                                 labels[:, None] == labels[None, :], 1, what=name)
  import json  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    logged = [json.loads(line) for line in f]
  train = [m for m in logged if "train/loss/masked_depth" in m]
  assert [m["step"] for m in train] == [1, 2, 3]
  assert all(np.isfinite(m["train/loss/masked_depth"]) for m in train)
  # Contrastive pairs of depth with each of the other three were trained.
  for pair in ("image_depth", "text_depth", "audio_depth"):
    assert all(np.isfinite(m[f"train/contrastive/{pair}"]) for m in train), pair
