"""HF CLIP checkpoints into mmjax towers (mmjax.interop.clip), against transformers'
CLIPModel (torch, float32) with random weights: the normalized image and text embeddings and
the logits. Needs the interop environment: ./scripts/setup_env.sh --interop."""
import jax
import numpy as np
import pytest
from flax import nnx

from mmjax import interop
from mmjax import models
from mmjax.data import info as info_lib
from mmjax.errors import UserError
from mmjax.interop import clip
from mmjax.interop import layout
from mmjax.models import mmt
from mmjax.train import init_from

torch = pytest.importorskip(
    "torch", reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")
transformers = pytest.importorskip(
    "transformers",
    reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")

TOL = 1e-5
VOCAB, EOS, TEXT_LEN, IMAGE = 99, 98, 12, 16


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory):
  """A small CLIPModel shaped as ViT-B/32's (a text tower narrower, shallower and with fewer
  heads than the image tower; QuickGELU), random weights, saved."""
  torch.manual_seed(0)
  config = transformers.CLIPConfig(
      text_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=20,
                       eos_token_id=EOS, bos_token_id=EOS - 1, pad_token_id=0),
      vision_config=dict(hidden_size=48, intermediate_size=192, num_hidden_layers=3,
                         num_attention_heads=4, image_size=IMAGE, patch_size=4),
      projection_dim=24)
  model = transformers.CLIPModel(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "class_embedding" in name or "position" in name:
        p.add_(0.1 * torch.randn_like(p))
  folder = tmp_path_factory.mktemp("random_clip")
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder), interop.read_config(folder), model.eval()


@pytest.fixture(scope="module")
def imported(random_clip):
  """(model, params, its config) of the random CLIP imported into mmjax."""
  folder, hf_config, _ = random_clip
  cfg = mmt.default_config()
  layout.apply(cfg, clip.model_config(hf_config))
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3), "text": TEXT_LEN}, vocab_size=VOCAB)
  model = models.make(cfg, info, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{folder}", params, params, cfg, info)
  # New: the masked-modeling decoder and SigLIP's bias, which CLIP does not have.
  assert {n.split("/")[0] for n in report["new"]} == {"decoder", "logit_bias"}
  return nnx.merge(graphdef, params, rest), params, cfg


def _inputs():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, IMAGE, IMAGE, 3)).astype(np.float32)
  lengths = np.array([3, 7, TEXT_LEN, 5])
  mask = np.arange(TEXT_LEN)[None] < lengths[:, None]
  ids = np.where(mask, rng.integers(1, EOS - 1, (4, TEXT_LEN)), 0).astype(np.int32)
  ids[np.arange(4), lengths - 1] = EOS  # Rows end in the end-of-text token.
  return images, ids, mask


def _assert_same(model, params, reference):
  """mmjax's embeddings and logits against a CLIPModel's on the same inputs."""
  images, ids, mask = _inputs()
  z = jax.device_get(jax.jit(model.embed)({"image": images, "text_ids": ids, "text_mask": mask}))
  scale = float(np.exp(params["logit_scale"]["image_text"].value))
  with torch.no_grad():
    out = reference(input_ids=torch.as_tensor(ids, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long),
                    pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(z["image"], out.image_embeds.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(z["text"], out.text_embeds.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(scale * z["image"] @ z["text"].T, out.logits_per_image.numpy(),
                             atol=TOL * scale, rtol=0)


def test_random_clip_matches_transformers(random_clip, imported):
  _assert_same(*imported[:2], random_clip[2])


def test_clip_export_loads_in_transformers_with_the_same_outputs(imported, tmp_path):
  """export.write('clip') of the imported towers: a CLIPModel with no missing or unused
  weights and the same embeddings and logits; a projection with a bias is refused."""
  from mmjax.interop import export  # pylint: disable=g-import-not-at-top
  model, params, cfg = imported
  flat = {init_from.param_names.name(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  out = export.write("clip", flat, cfg, str(tmp_path / "clip"), eos_token_id=EOS)
  exported, loading = transformers.CLIPModel.from_pretrained(out, output_loading_info=True)
  assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  _assert_same(model, params, exported.eval())
  flat["projections/text/proj/bias"] = flat["projections/text/proj/bias"] + 0.1
  with pytest.raises(UserError, match="have a bias"):
    export.write("clip", flat, cfg, str(tmp_path / "refused"), eos_token_id=EOS)


def test_clip_import_names_the_flags_a_config_lacks(random_clip):
  folder = random_clip[0]
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3), "text": TEXT_LEN}, vocab_size=VOCAB)
  with pytest.raises(UserError) as e:
    interop.check(f"hf:{folder}", mmt.default_config(), info)
  for flag in ("--config.model.towers=separate", "--config.model.causal=('text',)",
               "--config.model.pool=image=cls,text=eot", "--config.model.gelu=quick",
               "--config.model.proj_norm=False", "--config.model.encoder.width=48",
               "--config.model.tower.text.width=32", "--config.model.tower.text.depth=2"):
    assert flag in str(e.value)


@pytest.mark.parametrize("with_config", [True, False])
def test_open_clip_state_dict_imports_as_the_transformers_checkpoint(random_clip, imported,
                                                                     tmp_path, with_config):
  """The random CLIP in OpenAI's / open_clip's layout (open_clip.from_clip; its fused in_proj,
  [in, out] projections): config.init_from=open_clip:<file> gives exactly the parameters of the
  transformers import. With open_clip_config.json beside it the heads and GELU come from there;
  without, heads = width / 64 (OpenAI's rule), which these widths refuse by name."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  from mmjax.interop import open_clip  # pylint: disable=g-import-not-at-top
  folder, hf_config, _ = random_clip
  _, params, cfg = imported
  state, oc_config = open_clip.from_clip(hf_config, load_file(f"{folder}/model.safetensors"))
  path = tmp_path / "open_clip_model.safetensors"
  save_file(state, str(path))
  info = info_lib.planned({"image": (IMAGE, IMAGE, 3), "text": TEXT_LEN}, vocab_size=VOCAB)
  if not with_config:
    with pytest.raises(UserError, match="put its open_clip_config.json there"):
      init_from.restore_imported(f"open_clip:{path}", params, params, cfg, info)
    return
  (tmp_path / open_clip.CONFIG_FILE).write_text(__import__("json").dumps(oc_config))
  loaded, report = init_from.restore_imported(f"open_clip:{path}", params, params, cfg, info)
  assert {n.split("/")[0] for n in report["new"]} == {"decoder", "logit_bias"}
  assert not report["unused"]
  want = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  for p, value in jax.tree_util.tree_flatten_with_path(loaded)[0]:
    np.testing.assert_allclose(value, want[p], atol=1e-7, rtol=0,
                               err_msg=init_from.param_names.name(p))
