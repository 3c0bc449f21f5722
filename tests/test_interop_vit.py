"""HF ViT checkpoints into an mmjax image tower (mmjax.interop.vit), against transformers'
ViTModel (torch, float32) with random weights. Needs the interop environment:
./scripts/setup_env.sh --interop."""
import jax
import numpy as np
import pytest
from flax import nnx

from mmjax import interop
from mmjax import models
from mmjax.data import info as info_lib
from mmjax.errors import UserError
from mmjax.interop import layout
from mmjax.interop import vit
from mmjax.models import encoding
from mmjax.models import mmt
from mmjax.train import init_from

torch = pytest.importorskip(
    "torch", reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")
transformers = pytest.importorskip(
    "transformers",
    reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")

TOL = 1e-5
IMAGE, PATCH = 16, 4


@pytest.fixture(scope="module")
def random_vit(tmp_path_factory):
  """A small ViTModel with random weights (LayerNorms and class token perturbed), saved."""
  torch.manual_seed(0)
  config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, image_size=IMAGE, patch_size=PATCH,
                                  num_channels=3)
  model = transformers.ViTModel(config, add_pooling_layer=False)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layernorm" in name or "cls_token" in name or "position" in name:
        p.add_(0.1 * torch.randn_like(p))
  folder = tmp_path_factory.mktemp("random_vit")
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder), interop.read_config(folder), model.eval()


def _with_params(model, flat):
  """`model` with its parameters replaced by `flat` ({mmjax name: array})."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
  nnx.update(model, jax.tree_util.tree_unflatten(
      treedef, [flat[init_from.param_names.name(p)] for p, _ in leaves]))
  return model


def _image_model(hf_config, image=IMAGE, **extra):
  cfg = mmt.default_config()
  cfg.name = "classifier"
  with cfg.unlocked():
    cfg.inputs = ("image",)
  layout.apply(cfg, vit.model_config(hf_config) | extra)
  info = info_lib.planned({"image": (image, image, 3)})
  return models.make(cfg, info, rngs=nnx.Rngs(0)), cfg, info


@pytest.mark.parametrize("scan,image", [(False, IMAGE), (True, IMAGE), (False, 24)])
def test_random_vit_matches_transformers(random_vit, scan, image):
  """24 px: a 6x6 grid from the checkpoint's 4x4, against ViTModel's interpolate_pos_encoding."""
  folder, hf_config, reference = random_vit
  model, cfg, info = _image_model(hf_config, image, scan_layers=scan)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{folder}", params, params, cfg, info)
  assert report["new"] == ["head/bias", "head/kernel", "head_norm/bias", "head_norm/scale"]
  model = nnx.merge(graphdef, params, rest)
  if image != IMAGE:
    assert any("resized to 6x6" in n for n in report["notes"])
  images = np.random.default_rng(0).normal(size=(3, image, image, 3)).astype(np.float32)

  @jax.jit
  def run(images):
    tokens = model.tokenizers["image"]({"image": images})
    return encoding.encode(model, "image", tokens.x, tokens.valid, tokens.cls)

  h, cls = jax.device_get(run(images))
  with torch.no_grad():
    ref = reference(pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)),
                    interpolate_pos_encoding=image != IMAGE).last_hidden_state.numpy()
  np.testing.assert_allclose(cls, ref[:, 0], atol=TOL, rtol=0)
  np.testing.assert_allclose(h, ref[:, 1:], atol=TOL, rtol=0)


def test_vit_export_of_an_mmjax_tower_loads_in_transformers_with_the_same_outputs(tmp_path):
  """An mmjax image tower of ViT's architecture with mmjax's own parts (sin-cos positions, a
  modality vector, scanned layers) -> export.write('vit') -> ViTModel with no missing or
  unused weights and the same tokens; a pre-LN-less model is refused, naming the key."""
  from mmjax.interop import export  # pylint: disable=g-import-not-at-top
  cfg = mmt.default_config()
  cfg.name = "classifier"
  with cfg.unlocked():
    cfg.inputs = ("image",)
  layout.apply(cfg, {"cls_token": ("image",), "ln_pre_off": ("image",), "pool": "image=cls",
                     "gelu": "exact", "scan_layers": True, "image.patch_size": PATCH,
                     "encoder.width": 32, "encoder.depth": 2, "encoder.num_heads": 4,
                     "encoder.mlp_dim": 64})
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3)})
  model = models.make(cfg, info, rngs=nnx.Rngs(3))
  params = {init_from.param_names.name(p): np.asarray(v) for p, v in
            jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]}
  for name in params:  # Non-trivial LayerNorms and biases.
    if "norm" in name or "bias" in name:
      params[name] = params[name] + np.random.default_rng(len(name)).normal(
          0, 0.1, params[name].shape).astype(np.float32)
  out = export.write("vit", params, cfg, str(tmp_path / "vit"), image_size=(IMAGE, IMAGE))
  exported, loading = transformers.ViTModel.from_pretrained(
      out, add_pooling_layer=False, output_loading_info=True)
  assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  images = np.random.default_rng(0).normal(size=(3, IMAGE, IMAGE, 3)).astype(np.float32)
  model = _with_params(model, params)
  tokens = model.tokenizers["image"]({"image": images})
  h, cls = jax.device_get(encoding.encode(model, "image", tokens.x, tokens.valid, tokens.cls))
  with torch.no_grad():
    ref = exported.eval()(pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2))
                          ).last_hidden_state.numpy()
  np.testing.assert_allclose(cls, ref[:, 0], atol=TOL, rtol=0)
  np.testing.assert_allclose(h, ref[:, 1:], atol=TOL, rtol=0)
  layout.apply(cfg, {"ln_pre_off": ()})
  with pytest.raises(UserError, match="config.model.ln_pre_off"):
    export.write("vit", params, cfg, str(tmp_path / "refused"), image_size=(IMAGE, IMAGE))


def test_vit_import_names_the_flags_a_config_lacks(random_vit):
  folder, _, _ = random_vit
  cfg = mmt.default_config()
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3)})
  with pytest.raises(UserError) as e:
    interop.check(f"hf:{folder}", cfg, info)
  for flag in ("--config.model.cls_token=('image',)", "--config.model.pool=image=cls",
               "--config.model.image.pos_embed=learned", "--config.model.image.patch_size=4",
               "--config.model.ln_pre_off=('image',)"):
    assert flag in str(e.value)


@pytest.mark.parametrize("shape,new", [((4, 4), (6, 6)), ((3, 5), (7, 4)), ((8, 2), (2, 3))])
def test_position_resize_is_torch_bicubic(shape, new):
  """layout.resize_bicubic against torch's interpolate (bicubic, align_corners=False), which
  transformers uses to resize positions: square and non-square grids (audio), up and down."""
  table = np.random.default_rng(1).normal(size=(*shape, 5)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.as_tensor(table).permute(2, 0, 1)[None], size=new,
                                        mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
  np.testing.assert_allclose(layout.resize_bicubic(table, *new), ref.numpy(), atol=1e-5, rtol=0)


def test_random_mae_reconstructs_as_transformers(tmp_path):
  """A random-init ViTMAEForPreTraining imported whole (encoder, MAE's decoder with its class
  token and learned position table): with the same hidden patches (given to transformers as
  its `noise`), mmjax's masked pass predicts every patch as transformers' decoder does."""
  from mmjax.interop import vit_mae  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.ViTMAEConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      image_size=IMAGE, patch_size=PATCH, decoder_hidden_size=24, decoder_num_hidden_layers=2,
      decoder_num_attention_heads=2, decoder_intermediate_size=96, mask_ratio=0.75)
  reference = transformers.ViTMAEForPreTraining(config)
  with torch.no_grad():
    for name, p in reference.named_parameters():
      if "norm" in name or "cls_token" in name or "mask_token" in name:
        p.add_(0.1 * torch.randn_like(p))
  reference.save_pretrained(tmp_path, safe_serialization=True)
  reference.eval()
  cfg = mmt.default_config()
  layout.apply(cfg, vit_mae.model_config(interop.read_config(tmp_path)))
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3)})
  model = models.make(cfg, info, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{tmp_path}", params, params, cfg, info)
  assert {n.split("/")[0] for n in report["new"]} == {"projections"} and not report["unused"]
  model = nnx.merge(graphdef, params, rest)

  images = np.random.default_rng(0).normal(size=(3, IMAGE, IMAGE, 3)).astype(np.float32)
  out = jax.device_get(jax.jit(lambda b: model(b, key=jax.random.key(1),
                                               mask_ratios={"image": 0.75}, embeddings=None))(
                                                   {"image": images}))["image"]
  hidden = out["loss_mask"]
  noise = np.where(hidden, 0.5, 0.0) + np.random.default_rng(1).uniform(0, 0.5, hidden.shape)
  with torch.no_grad():
    ref = reference(pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)),
                    noise=torch.as_tensor(noise, dtype=torch.float32))
  np.testing.assert_array_equal(ref.mask.numpy().astype(bool), hidden)
  np.testing.assert_allclose(out["pred"], ref.logits.numpy(), atol=TOL, rtol=0)
