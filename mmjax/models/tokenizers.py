"""Modality tokenizers: raw batch arrays -> embedded tokens, validity and reconstruction targets.

Each tokenizer adds its positions and a learned modality-type vector, so the shared encoder can
tell where a token is and which modality it came from, also inside a joint sequence, and ends
in a LayerNorm (CLIP's ln_pre, for every modality): tokens of every modality enter the shared
encoder at the same scale. Without it, text (N(0, 0.02) embeddings) entered with mean norm 0.4
against 8 for image and 10 for audio (unit sin-cos positions plus a projection) at the tiny
width.
"""
import einops
import flax
import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.errors import UserError
from mmjax.models import audio_frontend
from mmjax.models import posemb
from mmjax.models.transformer import EMBED_INIT, LN_EPS, layer_norm, linear, partitioned

# Epsilon of the per-example spectrogram normalization; keeps silence finite (it becomes 0).
SPEC_NORM_EPS = 1e-5


@flax.struct.dataclass
class Tokens:
  """One modality's tokens.

  x: [B, N, D] embedded tokens (compute dtype), positions and type embedding included.
  valid: bool[B, N], False for padding.
  target: what masked modeling reconstructs: f32[B, N, P] patches, or int32[B, L] text ids.
  grid: static token grid, (rows, cols) or (length,), prod(grid) == N.
  maskable: bool[B, N], the tokens masked modeling may hide (a subset of valid: text's real
    wordpieces, not [CLS] / [SEP]); None means every valid token.
  cls: [1, 1, D] the class token (config.model.cls_token), which the encoder puts first and
    masking never hides; None without one.
  """
  x: jax.Array
  valid: jax.Array
  target: jax.Array
  grid: tuple = flax.struct.field(pytree_node=False)
  maskable: jax.Array | None = None
  cls: jax.Array | None = None

  def hideable(self):
    return self.valid if self.maskable is None else self.maskable & self.valid


def settings(model_cfg, modality):
  """What every tokenizer takes from config.model: the LayerNorm epsilon, whether its tokens
  end in a LayerNorm (modalities in ln_pre_off do not), and a class token (cls_token)."""
  return dict(eps=float(model_cfg.get("ln_eps", LN_EPS)),
              ln_pre=modality not in tuple(model_cfg.get("ln_pre_off", ())),
              cls_token=modality in tuple(model_cfg.get("cls_token", ())))


class _Finish(nnx.Module):
  """The end every tokenizer shares: an optional LayerNorm (CLIP's ln_pre) over the embedded
  tokens, and an optional learned class token that goes through it too (its position is part
  of it: ViT's cls_token + pos_embed[0])."""

  def _init_finish(self, width, *, dtype, rngs, eps=LN_EPS, ln_pre=True, cls_token=False):
    self.norm = layer_norm(width, dtype=dtype, rngs=rngs, eps=eps) if ln_pre else None
    self.cls = (nnx.Param(partitioned(EMBED_INIT, "embed")(rngs.params(), (width,)))
                if cls_token else None)

  def _finish(self, x_bnd):
    """(tokens, the class token [1, 1, D] or None) after the optional LayerNorm."""
    norm = (lambda v: v) if self.norm is None else self.norm
    cls = None if self.cls is None else norm(self.cls[...].astype(x_bnd.dtype))[None, None]
    return norm(x_bnd), cls


def _type_embed(width, rngs):
  return nnx.Param(partitioned(EMBED_INIT, "embed")(rngs.params(), (width,)))


def _add_position_and_type(x_bnd, pos_nd, type_d):
  return x_bnd + pos_nd.astype(x_bnd.dtype) + type_d.astype(x_bnd.dtype)


def _any_per_group(valid_bt, group, count):
  """bool[B, count]: group g is True when any of its `group` entries valid_bt[:, g*group:...]
  is (entries past count * group are dropped)."""
  return einops.reduce(valid_bt[:, :count * group], "b (n g) -> b n", "max", g=group)


def image_grid(image_shape, patch_size, key="config.model.image.patch_size"):
  """(rows, cols) of p x p patches of (H, W, C) images; UserError, naming `key`, if p does not
  tile them."""
  height, width_px = image_shape[:2]
  if height % patch_size or width_px % patch_size:
    raise UserError(f"{key}={patch_size} does not divide the image size {height}x{width_px}.")
  return height // patch_size, width_px // patch_size


def logmel_frames(num_samples, n_fft, hop):
  """Spectrogram frames of `num_samples` (audio_frontend.frame: no centering); 0 if shorter
  than one window."""
  return 0 if num_samples < n_fft else 1 + (num_samples - n_fft) // hop


def audio_grid(audio_cfg, num_samples, sample_rate):
  """Token grid of `num_samples` of audio: (rows, n_mels // patch_freq) for 'logmel', (frames,)
  for 'waveform'. UserError, naming data.audio_seconds, when it is shorter than one patch.

  audio_cfg: config.model.audio, or anything with its frontend's fields (an AudioTokenizer).
  """
  if audio_cfg.frontend == "logmel":
    frames = logmel_frames(num_samples, audio_cfg.n_fft, audio_cfg.hop)
    rows = frames // audio_cfg.patch_time
    need = audio_cfg.n_fft + (audio_cfg.patch_time - 1) * audio_cfg.hop
    what = (f"{frames} log-mel frames (model.audio.n_fft={audio_cfg.n_fft}, "
            f"hop={audio_cfg.hop}), fewer than one patch of model.audio.patch_time="
            f"{audio_cfg.patch_time} frames")
    grid = (rows, audio_cfg.n_mels // audio_cfg.patch_freq)
  else:
    rows = num_samples // audio_cfg.frame_size
    need = audio_cfg.frame_size
    what = f"less than one frame of model.audio.frame_size={audio_cfg.frame_size} samples"
    grid = (rows,)
  if rows == 0:
    raise UserError(f"data.audio_seconds: audio of {num_samples} samples at {sample_rate} Hz "
                    f"gives {what}; it needs at least {need} samples "
                    f"({need / sample_rate:.3g} s), or smaller audio patches.")
  return grid


class ImagePatchTokenizer(_Finish):
  """Images [B, H, W, C] -> non-overlapping p x p patches, 2-D sin-cos (or learned) positions.

  Integer images (uint8, what `decode` gives) are pixel values 0..255 and are mapped to
  [-1, 1]. Float images are taken as already in model range (the op strings
  `value_range(-1, 1)` or `normalize(...)`) and used as they are, never rescaled again.
  `input_key`: the batch key it reads (another image-like modality reads its own).
  """
  out_axis = "patch"

  def __init__(self, image_shape, patch_size, width, *, dtype, rngs, input_key="image",
               pos_embed="sincos", **finish):
    channels = image_shape[2]
    self.input_key = input_key
    self.patch_size = patch_size
    self.grid = image_grid(image_shape, patch_size, f"config.model.{input_key}.patch_size")
    self.patch_dim = self.out_dim = patch_size * patch_size * channels
    self.width = width
    self.patch_embed = linear(self.patch_dim, width, ("patch", "embed"), dtype=dtype, rngs=rngs)
    self.type_embed = _type_embed(width, rngs)
    self._init_finish(width, dtype=dtype, rngs=rngs, **finish)
    # Learned positions (ViT, CLIP) as a [rows, cols, width] table, so that init_from resizes
    # it over the 2-D grid; else the fixed sin-cos table of the grid.
    self.pos_embed = (nnx.Param(partitioned(EMBED_INIT, None, None, "embed")(
        rngs.params(), (*self.grid, width))) if pos_embed == "learned" else None)

  @staticmethod
  def pixels(images_bhwc):
    """f32 model input: integer pixels 0..255 -> [-1, 1]; float images unchanged."""
    if jnp.issubdtype(images_bhwc.dtype, jnp.integer):
      return images_bhwc.astype(jnp.float32) / 255.0 * 2.0 - 1.0
    return images_bhwc.astype(jnp.float32)

  def patchify(self, images_bhwc):
    """f32 images in [-1, 1] -> f32[B, N, p*p*C] patches, row-major over the patch grid."""
    p = self.patch_size
    return einops.rearrange(images_bhwc, "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)

  def unpatchify(self, patches_bnp):
    """f32[B, N, p*p*C] -> f32[B, H, W, C]; the inverse of patchify."""
    p, (h, _) = self.patch_size, self.grid
    return einops.rearrange(patches_bnp.astype(jnp.float32),
                            "b (h w) (p q c) -> b (h p) (w q) c", h=h, p=p, q=p)

  def __call__(self, batch):
    patches_bnp = self.patchify(self.pixels(batch[self.input_key]))
    pos = (posemb.sincos_2d(*self.grid, self.width) if self.pos_embed is None
           else einops.rearrange(self.pos_embed[...], "h w d -> (h w) d"))
    x_bnd, cls = self._finish(_add_position_and_type(self.patch_embed(patches_bnp), pos,
                                                     self.type_embed[...]))
    valid_bn = jnp.ones(patches_bnp.shape[:2], bool)
    return Tokens(x=x_bnd, valid=valid_bn, target=patches_bnp, grid=self.grid, cls=cls)


class TextTokenizer(_Finish):
  """int32[B, L] word-piece ids -> token embeddings with learned positions.

  Rows are laid out as the loader's tokenizer makes them: [CLS] wordpieces [SEP] [PAD]...
  (text_mask True on [CLS] .. [SEP]). Only the wordpieces between [CLS] and [SEP] are
  maskable: like BERT and M3AE, masked-LM never predicts the special tokens.
  """
  input_key = "text_ids"
  out_axis = "vocab"

  def __init__(self, vocab_size, max_len, width, *, dtype, rngs, **finish):
    self.max_len = max_len
    self.out_dim = vocab_size  # Masked-LM predicts word pieces.
    self.token_embed = nnx.Embed(vocab_size, width, dtype=dtype,
                                 embedding_init=partitioned(EMBED_INIT, "vocab", "embed"),
                                 rngs=rngs)
    self.pos_embed = nnx.Param(partitioned(EMBED_INIT, None, "embed")(
        rngs.params(), (max_len, width)))
    self.type_embed = _type_embed(width, rngs)
    self._init_finish(width, dtype=dtype, rngs=rngs, **finish)

  def __call__(self, batch):
    ids_bl = batch["text_ids"].astype(jnp.int32)
    length = ids_bl.shape[1]
    if length > self.max_len:
      raise UserError(f"Text of length {length} is longer than the model's {self.max_len} "
                      "positions (dataset text_len).")
    pos = self.pos_embed[...][:length]
    x_bld, cls = self._finish(_add_position_and_type(self.token_embed(ids_bl), pos,
                                                     self.type_embed[...]))
    valid_bl = batch["text_mask"].astype(bool)
    # Not the first valid token ([CLS]) nor the last ([SEP]).
    index_l = jnp.arange(length)
    last_b1 = valid_bl.sum(1, keepdims=True) - 1
    wordpiece_bl = valid_bl & (index_l > 0) & (index_l < last_b1)
    return Tokens(x=x_bld, valid=valid_bl, target=ids_bl, grid=(length,),
                  maskable=wordpiece_bl, cls=cls)


class AudioTokenizer(_Finish):
  """f32[B, T] waveforms -> patches of a log-mel spectrogram (frontend 'logmel', computed here on
  the accelerator) or of the raw waveform (frontend 'waveform', VATT).

  A frame is valid when any sample in its window is real (audio_mask), and a patch when any of
  its frames is, so a short clip at any offset keeps the patches it touches.

  stats_from_shown: the log-mel patches share per-example statistics, so the masked pass
  tokenizes again with `shown` (the visible patches), and no hidden patch reaches them
  (mmt.MultimodalTransformer._hide). Waveform frames share nothing.
  """
  input_key = "audio"
  out_axis = "patch"

  def __init__(self, audio_cfg, sample_rate, width, *, dtype, rngs, **finish):
    self.frontend = audio_cfg.frontend
    self.sample_rate = sample_rate
    self.width = width
    if self.frontend == "logmel":  # Sizes checked by mmt.check_config.
      self.n_fft, self.hop, self.n_mels = audio_cfg.n_fft, audio_cfg.hop, audio_cfg.n_mels
      self.fmin = float(audio_cfg.fmin)
      self.fmax = float(audio_cfg.fmax) or sample_rate / 2  # 0 means Nyquist.
      self.patch_time, self.patch_freq = audio_cfg.patch_time, audio_cfg.patch_freq
      patch_dim = self.patch_time * self.patch_freq
    elif self.frontend == "waveform":
      self.frame_size = audio_cfg.frame_size
      patch_dim = self.frame_size
    else:
      raise UserError(f"config.model.audio.frontend={self.frontend!r} is unknown: "
                      "use 'logmel' or 'waveform'.")
    self.stats_from_shown = self.frontend == "logmel"
    self.patch_dim = self.out_dim = patch_dim
    self.patch_embed = linear(patch_dim, width, ("patch", "embed"), dtype=dtype, rngs=rngs)
    self.type_embed = _type_embed(width, rngs)
    self._init_finish(width, dtype=dtype, rngs=rngs, **finish)

  def _logmel_patches(self, wave_bt, mask_bt, shown_bn):
    """-> (f32[B, N, pt*pf] patches of the normalized log-mel, bool[B, N], grid)."""
    grid = audio_grid(self, wave_bt.shape[1], self.sample_rate)  # Its fields are the config's.
    rows = grid[0]
    spec_bfm = audio_frontend.log_mel_spectrogram(
        wave_bt, sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop,
        n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax)
    # A frame is valid when any sample of its n_fft window is real.
    frame_valid_bf = audio_frontend.frame(mask_bt.astype(jnp.float32), self.n_fft,
                                          self.hop).max(-1) > 0
    # Frames that do not fill a whole patch row are dropped.
    to_patches = lambda x_bfm: einops.rearrange(x_bfm[:, :rows * self.patch_time],
                                                "b (t p) (f q) -> b (t f) (p q)",
                                                p=self.patch_time, q=self.patch_freq)
    patches = to_patches(spec_bfm)
    real = to_patches(jnp.broadcast_to(frame_valid_bf[..., None], spec_bfm.shape)
                      ).astype(jnp.float32)
    valid = einops.repeat(_any_per_group(frame_valid_bf, self.patch_time, rows),
                          "b t -> b (t f)", f=grid[1])
    # Per example: zero mean, unit variance over the valid frames of the patches in
    # `shown_bn`, so loudness and recording level do not dominate the reconstruction loss;
    # padded frames are then set to 0. The masked pass counts only the visible patches:
    # otherwise a hidden patch would shift every token and target through the statistics.
    w = real if shown_bn is None else real * shown_bn[..., None]
    count = jnp.maximum(w.sum((1, 2), keepdims=True), 1.0)
    mean = (patches * w).sum((1, 2), keepdims=True) / count
    var = (jnp.square(patches - mean) * w).sum((1, 2), keepdims=True) / count
    patches = (patches - mean) * jax.lax.rsqrt(var + SPEC_NORM_EPS) * real
    return patches, valid, grid

  def _waveform_patches(self, wave_bt, mask_bt):
    """-> (f32[B, N, frame_size] raw frames, bool[B, N], grid)."""
    (n,) = audio_grid(self, wave_bt.shape[1], self.sample_rate)
    frames = einops.rearrange(wave_bt[:, :n * self.frame_size], "b (n s) -> b n s",
                              s=self.frame_size)
    return frames, _any_per_group(mask_bt, self.frame_size, n), (n,)

  def __call__(self, batch, shown=None):
    """shown: bool[B, N], the patches the encoder sees (the masked pass), or None (all): the
    log-mel statistics come from these alone (stats_from_shown)."""
    wave_bt = batch["audio"].astype(jnp.float32)
    mask_bt = batch["audio_mask"].astype(bool)
    if self.frontend == "logmel":
      patches, valid, grid = self._logmel_patches(wave_bt, mask_bt, shown)
    else:
      patches, valid, grid = self._waveform_patches(wave_bt, mask_bt)
    pos = posemb.for_grid(grid, self.width)
    x_bnd, cls = self._finish(_add_position_and_type(self.patch_embed(patches), pos,
                                                     self.type_embed[...]))
    return Tokens(x=x_bnd, valid=valid, target=patches, grid=grid, cls=cls)
