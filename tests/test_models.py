"""Tokenizers and the multimodal Transformer at the tiny size: shapes, masks, dtypes, fusion."""

import einops
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import modality
from mmjax.data import info as data_info
from mmjax.errors import UserError
from mmjax.models import audio_frontend, mmt, sizes
from mmjax.train import mfu

INFO = data_info.planned({"image": (8, 8, 1), "text": 16, "audio": 8000}, name="test",
                         vocab_size=200, sample_rate=8000)
TEXT_LEN, AUDIO_LEN, IMAGE_SHAPE = 16, 8000, (8, 8, 1)
RATIOS = {"image": 0.75, "text": 0.3, "audio": 0.75}
B = 3
TEXT_LENGTHS = (16, 9, 4)
AUDIO_LENGTHS = (8000, 3000, 200)
LOGICAL_AXES = {"embed", "mlp", "heads", "kv", "vocab", "patch", None}


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  text_mask = np.arange(TEXT_LEN)[None] < np.array(TEXT_LENGTHS)[:, None]
  audio_mask = np.arange(AUDIO_LEN)[None] < np.array(AUDIO_LENGTHS)[:, None]
  t = np.arange(AUDIO_LEN) / INFO.sample_rate
  audio = 0.5 * np.sin(2 * np.pi * (300 * t + 800 * t ** 2)) + 0.05 * rng.normal(size=(B, t.size))
  return {
      "image": rng.integers(0, 256, (B, *IMAGE_SHAPE)).astype(np.uint8),
      "text_ids": np.where(text_mask, rng.integers(1, INFO.vocab_size, text_mask.shape),
                           0).astype(np.int32),
      "text_mask": text_mask,
      "audio": np.where(audio_mask, audio, 0.0).astype(np.float32),
      "audio_mask": audio_mask,
  }


def _config(**overrides):
  config = mmt.default_config()
  for k, v in overrides.items():
    if k == "frontend":
      config.audio.frontend = v
    else:
      config[k] = v
  return config


class Forward:
  """A model and its jitted forward over explicit (graphdef, state), as in the training step."""

  def __init__(self, **overrides):
    self.model = mmt.MultimodalTransformer(_config(**overrides), INFO, rngs=nnx.Rngs(0))
    self.graphdef, self.state = nnx.split(self.model)
    self._fns = {}

  def __call__(self, batch, embeddings="clean", key=0):
    if embeddings not in self._fns:
      self._fns[embeddings] = jax.jit(lambda s, b, k: nnx.merge(self.graphdef, s)(
          b, key=k, mask_ratios=RATIOS, embeddings=embeddings))
    return self._fns[embeddings](self.state, batch, jax.random.key(key))


@pytest.fixture(scope="module")
def batch():
  return make_batch()


@pytest.fixture(scope="module")
def separate():
  return Forward(fusion="separate")


@pytest.fixture(scope="module")
def joint():
  return Forward(fusion="joint")


# -- tokenizers -------------------------------------------------------------------------------

def _tokenizer(name, **overrides):
  return modality.get(name).tokenizer(_config(**overrides), INFO, 128, dtype=jnp.float32,
                                      rngs=nnx.Rngs(0))


def test_image_tokens(batch):
  tok = _tokenizer("image")
  t = tok(batch)
  assert t.x.shape == (B, 16, 128) and t.target.shape == (B, 16, 4) and t.grid == (4, 4)
  assert t.valid.all()
  pixels = batch["image"].astype(np.float32) / 255 * 2 - 1
  np.testing.assert_allclose(t.target[:, 0], pixels[:, :2, :2, 0].reshape(B, 4), atol=1e-6)
  np.testing.assert_allclose(tok.unpatchify(t.target), pixels, atol=1e-6)


def test_text_tokens(batch):
  t = _tokenizer("text")(batch)
  assert t.x.shape == (B, 16, 128)
  np.testing.assert_array_equal(t.valid, batch["text_mask"])
  np.testing.assert_array_equal(t.target, batch["text_ids"])


def test_logmel_audio_tokens(batch):
  tok = _tokenizer("audio")
  t = tok(batch)
  frames = 1 + (8000 - 256) // 128  # 61 frames -> 15 rows of 4 frames, 32 mels -> 4 columns.
  rows = frames // 4
  assert t.grid == (rows, 4)
  assert t.x.shape == (B, rows * 4, 128) and t.target.shape == (B, rows * 4, 4 * 8)
  # A patch row is valid iff one of its frames holds a real sample; for a clip that starts at
  # sample 0, iff its first sample (row * 4 frames * 128 hop) is real.
  row_valid = (np.arange(rows) * 4 * 128)[None] < np.array(AUDIO_LENGTHS)[:, None]
  np.testing.assert_array_equal(t.valid, np.repeat(row_valid, 4, axis=1))
  # Each example's log-mel is normalized over the valid frames of its patches (not the 61st
  # frame, which fills no patch); padded frames become 0. With `shown` (the masked pass), over
  # those of the shown patches only.
  spec = audio_frontend.log_mel_spectrogram(batch["audio"], sample_rate=8000, n_fft=256,
                                            hop=128, n_mels=32)
  shown = np.random.default_rng(0).random(t.valid.shape) < 0.3
  shown[:, 0] = True  # The masked pass shows at least one valid patch of every example.
  t_shown = tok(batch, shown=shown)
  for row, length in enumerate(AUDIO_LENGTHS):
    frame_valid = np.arange(rows * 4) * 128 < length
    patches = einops.rearrange(np.asarray(spec[row, :rows * 4], np.float64),
                               "(t p) (f q) -> (t f) (p q)", p=4, q=8)
    real = einops.repeat(frame_valid, "(t p) -> (t f) (p q)", p=4, f=4, q=8)
    for got, counted in ((t, real), (t_shown, real & shown[row][:, None])):
      mean, std = patches[counted].mean(), patches[counted].std()
      expected = np.where(real, (patches - mean) / std, 0.0)
      np.testing.assert_allclose(got.target[row], expected, atol=2e-3)
  np.testing.assert_array_equal(t_shown.valid, t.valid)


def test_waveform_audio_tokens(batch):
  t = _tokenizer("audio", frontend="waveform")(batch)
  n = 8000 // 256
  assert t.grid == (n,) and t.x.shape == (B, n, 128) and t.target.shape == (B, n, 256)
  np.testing.assert_array_equal(
      t.valid, (np.arange(n) * 256)[None] < np.array(AUDIO_LENGTHS)[:, None])
  np.testing.assert_array_equal(t.target[:, 1], batch["audio"][:, 256:512])


def test_parameters_are_float32_with_logical_axes():
  model = mmt.MultimodalTransformer(_config(dtype="bfloat16"), INFO, rngs=nnx.Rngs(0))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    assert var[...].dtype == jnp.float32, path
    if var[...].ndim >= 2:
      names = var.get_metadata().get("out_sharding")
      assert names is not None and len(names) == var[...].ndim, path
      assert set(names) <= LOGICAL_AXES, (path, names)


def test_unknown_size_is_a_user_error():
  with pytest.raises(UserError, match="tiny"):
    sizes.get("XXL")


# -- the whole model --------------------------------------------------------------------------

def _check_outputs(out, embeddings):
  n_audio = 15 * 4
  for m, n, p in (("image", 16, 4), ("audio", n_audio, 32)):
    assert out[m]["pred"].shape == out[m]["target"].shape == (B, n, p)
    assert out[m]["pred"].dtype == jnp.float32
    assert out[m]["loss_mask"].shape == (B, n) and out[m]["loss_mask"].dtype == bool
  np.testing.assert_array_equal(out["image"]["loss_mask"].sum(1), 12)  # 16 - round(0.75 * 16)
  assert out["text"]["pred"].shape == (B, 16, 200)
  assert out["text"]["pred"].dtype == jnp.float32
  # Only wordpieces are hidden: not the first ([CLS]) nor the last ([SEP]) valid token.
  np.testing.assert_array_equal(out["text"]["loss_mask"].sum(1),
                                [round(0.3 * (n - 2)) for n in TEXT_LENGTHS])
  if embeddings:
    assert set(out["embeddings"]) == {"image", "text", "audio"}
    for m, z in out["embeddings"].items():
      assert z.shape == (B, 128) and z.dtype == jnp.float32
      # Masking keeps valid tokens first, so even the 200-sample clip (4 valid patches of
      # 60, 15 kept) pools real tokens in the masked view.
      np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
  else:
    assert "embeddings" not in out
  pairs = {"image_text", "image_audio", "text_audio"}
  assert set(out["logit_scale"]) == set(out["logit_bias"]) == pairs
  np.testing.assert_allclose(out["logit_scale"]["image_text"], 10.0, rtol=1e-5)
  np.testing.assert_allclose(out["logit_bias"]["text_audio"], -10.0)
  for leaf in jax.tree.leaves(out):
    assert np.isfinite(np.asarray(leaf, np.float32)).all()


@pytest.mark.parametrize("fusion,embeddings",
                         [("separate", "clean"), ("separate", "masked"), ("joint", "clean")])
def test_forward_shapes(request, batch, fusion, embeddings):
  forward = request.getfixturevalue(fusion)
  _check_outputs(forward(batch, embeddings), embeddings)


def test_joint_with_masked_embeddings_is_a_user_error(joint, batch):
  with pytest.raises(UserError, match="separate"):
    joint(batch, "masked")


def test_embed_matches_clean_embeddings(separate, batch):
  z = jax.jit(lambda s, b: nnx.merge(separate.graphdef, s).embed(b))(separate.state, batch)
  clean = separate(batch, "clean")["embeddings"]
  for m in ("image", "text", "audio"):
    np.testing.assert_allclose(z[m], clean[m], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_outputs(batch):
  forward = Forward(dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(forward.model, nnx.Param)))
  out = forward(batch, "clean")
  for leaf in jax.tree.leaves(out):
    assert leaf.dtype in (jnp.float32, jnp.int32, jnp.bool_)
  _check_outputs(out, "clean")


def test_image_sees_text_only_in_joint_mode(separate, joint, batch):
  other_text = dict(batch, text_ids=make_batch(seed=1)["text_ids"])
  for forward, depends in ((separate, False), (joint, True)):
    a = forward(batch, "clean")["image"]["pred"]
    b = forward(other_text, "clean")["image"]["pred"]
    assert (np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4) == depends



def test_example_without_a_modality_leaves_it_out(joint, batch):
  """has_text False on row 1 (a mixture entry without text): in the joint sequence its image and
  audio no longer see its text tokens, and none of them is a masked-text target."""
  flags = dict(batch, has_text=np.array([True, False, True]))
  other_text = dict(flags, text_ids=make_batch(seed=1)["text_ids"])
  a, b = joint(flags, "clean"), joint(other_text, "clean")
  for m in ("image", "audio"):
    np.testing.assert_allclose(a[m]["pred"][1], b[m]["pred"][1], atol=1e-6)
    assert np.abs(np.asarray(a[m]["pred"][0] - b[m]["pred"][0])).max() > 1e-4  # Row 0 sees it.
  assert not np.asarray(a["text"]["loss_mask"][1]).any()
  assert np.asarray(a["text"]["loss_mask"])[[0, 2]].any(axis=1).all()
  np.testing.assert_array_equal(a["present"]["text"], [True, False, True])
  np.testing.assert_array_equal(a["present"]["image"], [True] * 3)  # No flag: all have it.

def test_special_tokens_are_never_hidden(separate, batch):
  """Over many draws, masked-LM hides only wordpieces (never [CLS], the first valid token, nor
  [SEP], the last), exactly round(ratio x wordpieces) of them per row (BERT, M3AE)."""
  lengths = np.array(TEXT_LENGTHS)
  counts = []
  for key in range(40):
    hidden = np.asarray(separate(batch, "clean", key=key)["text"]["loss_mask"])
    assert not hidden[:, 0].any()
    assert not hidden[np.arange(B), lengths - 1].any()
    assert not (hidden & ~batch["text_mask"]).any()
    np.testing.assert_array_equal(hidden.sum(1), np.round(0.3 * (lengths - 2)))
    counts.append(hidden[0])
  # Every wordpiece of the long caption is hidden in some draw: the choice is random.
  assert np.stack(counts)[:, 1:lengths[0] - 1].any(0).all()


def _hidden_audio_rows(hidden_bn, audio):
  """The waveform with new samples where only frames of wholly hidden patch rows look (n_fft
  256, hop 128, 4 frames a row: row r alone holds samples [512 r + 128, 512 r + 512)), and
  the mask of the patches that changed."""
  rows_bt = einops.rearrange(hidden_bn, "b (t f) -> b t f", f=4).all(-1)
  index = np.arange(AUDIO_LEN)
  own_row = (index - 128) // 512
  only_row = ((index - 128) % 512 < 384) & (index >= 128) & (own_row < rows_bt.shape[1])
  changed_bt = only_row[None] & np.take_along_axis(
      rows_bt, np.minimum(own_row, rows_bt.shape[1] - 1)[None].repeat(B, 0), axis=1)
  noise = np.random.default_rng(1).normal(size=audio.shape).astype(np.float32)
  return np.where(changed_bt, noise, audio), np.repeat(rows_bt, 4, axis=1)


@pytest.mark.parametrize("fusion", ["separate", "joint"])
def test_hidden_tokens_cannot_leak(request, batch, fusion):
  """Changing what a hidden token holds (a text id, an image patch's pixels, the samples of a
  row of hidden audio patches) leaves every prediction of the hidden tokens bit-identical, in
  both fusions; the audio targets of the visible patches too (the log-mel statistics leave the
  hidden patches out)."""
  forward = request.getfixturevalue(fusion)
  out = forward(batch, "clean")
  hidden_text = np.asarray(out["text"]["loss_mask"])
  hidden_patch = np.asarray(out["image"]["loss_mask"])
  hidden_audio = np.asarray(out["audio"]["loss_mask"])
  assert hidden_text.any() and hidden_patch.any()
  pixel_hidden = einops.repeat(hidden_patch, "b (h w) -> b (h p) (w q) 1", h=4, p=2, q=2)
  audio, changed_audio = _hidden_audio_rows(hidden_audio, batch["audio"])
  changed = dict(batch,
                 text_ids=np.where(hidden_text, (batch["text_ids"] + 7) % INFO.vocab_size,
                                   batch["text_ids"]).astype(np.int32),
                 image=np.where(pixel_hidden, 255 - batch["image"], batch["image"]),
                 audio=audio)
  assert (changed["text_ids"] != batch["text_ids"]).any()
  assert (changed["image"] != batch["image"]).any()
  assert changed_audio.sum() >= 8 and (audio != batch["audio"]).any()
  again = forward(changed, "clean")
  np.testing.assert_array_equal(np.asarray(again["text"]["loss_mask"]), hidden_text)
  np.testing.assert_array_equal(np.asarray(again["audio"]["loss_mask"]), hidden_audio)
  np.testing.assert_array_equal(np.asarray(again["text"]["pred"])[hidden_text],
                                np.asarray(out["text"]["pred"])[hidden_text])
  np.testing.assert_array_equal(np.asarray(again["image"]["pred"])[hidden_patch],
                                np.asarray(out["image"]["pred"])[hidden_patch])
  np.testing.assert_array_equal(np.asarray(again["audio"]["pred"])[hidden_audio],
                                np.asarray(out["audio"]["pred"])[hidden_audio])
  np.testing.assert_array_equal(np.asarray(again["audio"]["target"])[~hidden_audio],
                                np.asarray(out["audio"]["target"])[~hidden_audio])
  # The changed rows' own targets do change: the test reached them.
  assert (np.asarray(again["audio"]["target"]) != np.asarray(out["audio"]["target"]))[
      changed_audio].any()


def test_audio_patch_is_valid_when_any_frame_has_signal():
  """A clip that does not start at sample 0 (random_crop_or_pad) keeps every patch it touches:
  a patch is valid when any of its frames' windows holds a real sample."""
  tok = _tokenizer("audio")  # n_fft 256, hop 128, patch_time 4: a patch row spans 640 samples.
  starts, ends = np.array([600, 100, 0]), np.array([1400, 900, 8000])
  index = np.arange(AUDIO_LEN)
  mask = (index[None] >= starts[:, None]) & (index[None] < ends[:, None])
  audio = np.where(mask, np.sin(index / 3.0)[None], 0.0).astype(np.float32)
  t = tok({"audio": audio, "audio_mask": mask})
  rows = t.grid[0]
  first, last = np.arange(rows) * 512, np.arange(rows) * 512 + 3 * 128 + 256  # [first, last)
  row_valid = (first[None] < ends[:, None]) & (last[None] > starts[:, None])
  np.testing.assert_array_equal(t.valid, np.repeat(row_valid, 4, axis=1))
  assert row_valid[0, :3].all() and not row_valid[0, 3:].any()  # Rows 0, 1, 2 of [600, 1400).


def test_example_without_a_valid_audio_patch_lacks_audio(separate, batch):
  """Audio with no real sample has no valid patch: the example counts as lacking audio, so its
  constant embedding is kept out of the contrastive pairs."""
  silent = dict(batch, audio=batch["audio"] * np.array([1, 1, 0], np.float32)[:, None],
                audio_mask=batch["audio_mask"] & np.array([True, True, False])[:, None])
  out = separate(silent, "clean")
  np.testing.assert_array_equal(out["present"]["audio"], [True, True, False])
  np.testing.assert_array_equal(out["present"]["image"], [True] * 3)
  assert not np.asarray(out["audio"]["loss_mask"][2]).any()


def test_masking_keeps_valid_audio_tokens_first(separate, batch):
  """Rows with 60, 24 and 4 valid patches of 60, 15 kept: the encoder sees min(valid, 15) valid
  ones, so exactly max(0, valid - 15) valid patches are hidden, over many draws."""
  tok = _tokenizer("audio")
  n_valid = np.asarray(tok(batch).valid).sum(1)
  np.testing.assert_array_equal(n_valid, [60, 24, 4])
  for key in range(5):
    hidden = np.asarray(separate(batch, "clean", key=key)["audio"]["loss_mask"])
    np.testing.assert_array_equal(hidden.sum(1), np.maximum(n_valid - 15, 0))


def test_tokens_of_every_modality_enter_the_encoder_at_one_scale(batch):
  """Each tokenizer ends in a LayerNorm: at initialization, the mean token norm of text,
  image and audio agree (they were 0.4, 8.2 and 10.3 before)."""
  norms = {}
  for m in ("image", "text", "audio"):
    t = _tokenizer(m)(batch)
    norms[m] = float(np.linalg.norm(np.asarray(t.x), axis=-1)[np.asarray(t.valid)].mean())
  print("mean token norms:", norms)
  np.testing.assert_allclose(list(norms.values()), np.sqrt(128), rtol=0.02)


def test_float_images_are_not_rescaled(batch):
  """uint8 images are mapped to [-1, 1]; float images (value_range(-1, 1), normalize) are used
  as they are, so `decode|value_range(-1, 1)` gives the model the same input as `decode`."""
  from mmjax.data import ops  # pylint: disable=g-import-not-at-top
  tok = _tokenizer("image")
  as_float = np.stack([ops.build("value_range(-1, 1)")({"image": im})["image"]
                       for im in batch["image"]])
  assert as_float.dtype == np.float32
  a, b = tok(batch), tok(dict(batch, image=as_float))
  np.testing.assert_allclose(b.target, a.target, atol=1e-6)
  np.testing.assert_allclose(b.x, a.x, atol=1e-5)
  assert np.asarray(a.target).min() < -0.9 and np.asarray(a.target).max() > 0.9


# -- scan over layers, remat ------------------------------------------------------------------

def _loss_and_grads(model, batch):
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params):
    out = nnx.merge(graphdef, params)(batch, key=jax.random.key(0), mask_ratios=RATIOS)
    return out["image"]["pred"].sum() + sum(z.sum() for z in out["embeddings"].values())

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_same_loss_and_gradients(batch, remat):
  plain = mmt.MultimodalTransformer(_config(), INFO, rngs=nnx.Rngs(0))
  rematted = mmt.MultimodalTransformer(_config(remat=remat), INFO, rngs=nnx.Rngs(0))
  (l1, g1), (l2, g2) = _loss_and_grads(plain, batch), _loss_and_grads(rematted, batch)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g2, g1)


def test_scan_layers_same_function_with_stacked_parameters(batch):
  unrolled = mmt.MultimodalTransformer(_config(), INFO, rngs=nnx.Rngs(0))
  scanned = mmt.MultimodalTransformer(_config(scan_layers=True, remat="full"), INFO,
                                      rngs=nnx.Rngs(1))
  # One stacked leaf per block parameter, with the 'layers' axis first in its logical names.
  qkv = scanned.encoder.blocks.blocks.attn.qkv.kernel
  assert qkv.shape[0] == sizes.get("tiny").depth
  spec = nnx.get_partition_spec(nnx.state(scanned.encoder.blocks))
  assert spec["blocks"]["attn"]["qkv"]["kernel"].value[0] == "layers"
  # The unrolled model's parameters, each Stack's blocks stacked on a leading axis.
  pure = nnx.state(unrolled, nnx.Param).to_pure_dict()
  for part in ("encoder", "decoder"):
    layers = pure[part]["blocks"]["blocks"]
    pure[part]["blocks"]["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                                  *[layers[i] for i in sorted(layers)])
  params = nnx.state(scanned, nnx.Param)
  nnx.replace_by_pure_dict(params, pure)
  nnx.update(scanned, params)
  (l1, _), (l2, _) = _loss_and_grads(unrolled, batch), _loss_and_grads(scanned, batch)
  np.testing.assert_allclose(l2, l1, rtol=1e-5)


def test_separate_towers_encode_each_modality_with_its_own_weights(separate, batch):
  """towers='separate' (CLIP, ImageBind): a tower per modality, encoders/<m>. With every tower
  holding the shared encoder's weights it is the shared model; a change to the text tower
  changes text alone."""
  towers = Forward(towers="separate")
  pure = nnx.state(separate.model, nnx.Param).to_pure_dict()
  pure["encoders"] = {m: pure["encoder"] for m in ("image", "text", "audio")}
  del pure["encoder"]
  params = nnx.state(towers.model, nnx.Param)
  nnx.replace_by_pure_dict(params, pure)
  embed = jax.jit(lambda p, b: nnx.merge(towers.graphdef, p, nnx.state(
      towers.model, nnx.Not(nnx.Param))).embed(b))
  z_shared = separate(batch, "clean")["embeddings"]
  z = embed(params, batch)
  for m in z:
    np.testing.assert_allclose(z[m], z_shared[m], atol=1e-5, err_msg=m)
  qkv = params["encoders"]["text"]["blocks"]["blocks"][0]["attn"]["qkv"]["kernel"]
  qkv.value = qkv.value * 1.5
  changed = embed(params, batch)
  for m in z:
    assert (np.abs(np.asarray(changed[m]) - np.asarray(z[m])).max() > 1e-4) == (m == "text"), m
  with pytest.raises(UserError, match="towers='shared'"):
    mmt.MultimodalTransformer(_config(towers="separate", fusion="joint"), INFO,
                              rngs=nnx.Rngs(0))


def test_towers_of_different_shapes(separate, batch):
  """config.model.tower.<m> gives one tower its own shape (CLIP's narrower text tower): its
  tokenizer, encoder, projection and decoder input follow it, and the useful FLOPs count it
  at its size. A tower shape without towers='separate' is refused."""
  text = dict(width=64, depth=2, num_heads=2, mlp_dim=128)
  narrow = Forward(towers="separate", tower={"text": text})
  enc = narrow.model.encoders
  assert enc["text"].blocks.blocks[0].attn.qkv.kernel.shape == (64, 3, 2, 32)
  assert len(enc["text"].blocks.blocks) == 2
  assert enc["image"].blocks.blocks[0].attn.qkv.kernel.shape == (128, 3, 4, 32)
  assert narrow.model.tokenizers["text"].token_embed.embedding.shape[-1] == 64
  assert narrow.model.decoder.embed_of("text").kernel.shape[0] == 64
  out, wide = narrow(batch), separate(batch)
  for m in RATIOS:
    assert out[m]["pred"].shape == wide[m]["pred"].shape and np.isfinite(out[m]["pred"]).all()
    assert out["embeddings"][m].shape == wide["embeddings"][m].shape
  # The same image and audio passes, a text tower of half the width and depth: fewer FLOPs.
  flops = lambda f, o: float(mfu.useful_flops(f.model, o["passes"]))
  assert 0 < flops(narrow, out) < flops(separate, wide)
  with pytest.raises(UserError, match="towers='separate'"):
    mmt.MultimodalTransformer(_config(tower={"text": text}), INFO, rngs=nnx.Rngs(0))


def test_layer_decay_reaches_into_every_tower():
  from mmjax.train import optimizer  # pylint: disable=g-import-not-at-top
  params = {"encoders": {"text": {"blocks": {"blocks": {"1": {"w": jnp.ones(2)}}},
                                  "norm": {"scale": jnp.ones(2)}}},
            "tokenizers": {"text": {"w": jnp.ones(2)}}}
  scales = optimizer.layer_scales(params, depth=4, decay=0.5)
  assert float(scales["encoders"]["text"]["blocks"]["blocks"]["1"]["w"]) == 0.5 ** 3
  assert float(scales["encoders"]["text"]["norm"]["scale"]) == 1.0
  assert float(scales["tokenizers"]["text"]["w"]) == 0.5 ** 5


def test_a_class_token_is_encoded_first_and_pooled(batch):
  """cls_token, pool='cls' (ViT, CLIP): the masked view's embeddings are the class token's
  output, which masked modeling never hides; the rest of the outputs keep their shapes.
  ln_pre_off drops a modality's tokenizer LayerNorm. (The unmasked pass: test_interop_*.)"""
  embeddings = "masked"
  forward = Forward(cls_token=("image", "text", "audio"), pool="cls", ln_pre_off=("image",))
  _check_outputs(forward(batch, embeddings), embeddings)
  params = nnx.state(forward.model, nnx.Param).to_pure_dict()
  assert "norm" not in params["tokenizers"]["image"] and "norm" in params["tokenizers"]["text"]
  assert {m for m, t in params["tokenizers"].items() if "cls" in t} == {"image", "text", "audio"}
  # The embedding follows the class token's parameter.
  state = nnx.state(forward.model)
  z = forward(batch, embeddings)["embeddings"]
  cls = state["tokenizers"]["image"]["cls"]
  cls.value = cls.value + jax.random.normal(jax.random.key(1), cls.value.shape)  # (A constant
  # shift would be invisible to the LayerNorms.)
  z2 = forward._fns[embeddings](state, batch, jax.random.key(0))  # pylint: disable=protected-access
  moved = {m: float(np.abs(np.asarray(z2["embeddings"][m]) - np.asarray(z[m])).max())
           for m in z}
  assert moved["image"] > 1e-4 and moved["text"] == moved["audio"] == 0.0
  with pytest.raises(UserError, match="add them to config.model.cls_token"):
    mmt.MultimodalTransformer(_config(pool="cls"), INFO, rngs=nnx.Rngs(0))
  with pytest.raises(UserError, match=r"cls_token=True: give a tuple of modalities"):
    config = _config()
    with config.unlocked():
      del config["cls_token"]
      config.cls_token = True
    mmt.check_config(config)
