"""The raw-input baseline (model name 'raw'): multinomial logistic regression on fixed,
parameter-free features of the inputs, the row every ablation table compares pretrained
representations against (issue 23).

A drop-in for the fine-tuning model 'classifier' (mmjax.models.classifier): the same
constructor, call and output, the same config.model.inputs, trained by the same optimizer,
objective and steps, so the probe and fine-tune protocols measure it as they measure a
pretrained encoder. Its only parameters are the head's (`head/kernel`, `head/bias`,
zero-initialized like the classifier's head): a probe (optimizer.freeze='backbone') trains
all of them, and init_from has nothing to load.

Features per example, one block per input in canonical order, concatenated:
  image  the pixels, uint8 / 255 in [0, 1], flattened over (H, W, C); then standardized: zero
         mean and unit variance over the example's pixels (a LayerNorm without parameters).
  text   a bag of words: the count of each wordpiece id over the row's wordpieces, i.e. its
         valid tokens (text_mask) other than the first ([CLS]) and the last ([SEP]), as
         TextTokenizer finds the maskable ones; [PAD] is not valid. Length info.vocab_size.
         Then log1p.
  audio  the log-mel spectrogram as the audio tokenizer computes it before patching
         (audio_frontend.log_mel_spectrogram with config.model.audio's n_fft, hop, n_mels,
         fmin, fmax; every frame), f32[frames * n_mels] flattened; then standardized as the
         tokenizer standardizes its patches: zero mean and unit variance over the example's
         valid frames (a frame is valid when any sample of its window is, audio_mask), padded
         frames set to 0. (With frontend 'waveform' the same log-mel settings are used: the
         baseline is a spectrogram whatever the pretrained model reads.)
An example without a modality (has_<modality> False) has zeros in that block.

Why these standardizations: plain logistic regression is badly conditioned on inputs that
share a large common offset (pixels all in [0, 1] around their mean; log-mels around
log(1e-6) = -13.8 in silence): one direction of the loss is far steeper than the others, and
the first steps spend themselves on it. Centering and scaling each example removes the offset
with no statistic learned from the data, so the baseline stays a fixed function of the
input; each entry then has unit variance, the scale of the LayerNorm'd features a probe of the
classifier sees, so the probe's learning rate means the same for both. Counts are not centered:
that would make the sparse bag dense, every absent word a negative feature whose value
depends on the caption's length. log1p keeps absent words at 0, damps repeats and bounds a
row's entries by log(1 + text length).
Measured on mmjax_digits (finetune_digits, all labels, 300 steps, one seed; test accuracy,
probe / full): standardized image 0.944 / 0.877, audio 0.763 / 0.604, image+audio 0.983 /
0.928; without standardization 0.930 / 0.855, 0.763 / 0.730, 0.811 / 0.811, and the probe's
audio loss starts at 4.5 and jumps about for 100 steps (1.0 and falling when standardized);
with each block scaled to unit norm instead, 0.883 / 0.811, 0.465 / 0.331 (too small a step
for the protocol's learning rates). Text is 1.000 either way (raw counts or log1p).
"""
import math

import einops
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mmjax import modality as modality_lib
from mmjax.errors import UserError
from mmjax.modality import presence_key
from mmjax.models import audio_frontend
from mmjax.models import classifier
from mmjax.models import tokenizers
from mmjax.models.transformer import ZEROS, partitioned

# Variance floor of the per-example standardization: the audio tokenizer's, so a silent or
# constant input becomes zeros rather than NaN.
STANDARDIZE_EPS = tokenizers.SPEC_NORM_EPS


def standardize(x_bf, valid_bf=None):
  """f32[B, F]: each row at zero mean, unit variance over its valid entries (all if
  `valid_bf` is None), invalid entries 0."""
  w = jnp.ones_like(x_bf) if valid_bf is None else valid_bf.astype(jnp.float32)
  count = jnp.maximum(w.sum(-1, keepdims=True), 1.0)
  mean = (x_bf * w).sum(-1, keepdims=True) / count
  var = (jnp.square(x_bf - mean) * w).sum(-1, keepdims=True) / count
  return (x_bf - mean) * jax.lax.rsqrt(var + STANDARDIZE_EPS) * w


def pixels(images_bhwc):
  """f32[B, H*W*C]: uint8 pixels / 255, flattened (float images are taken as they are)."""
  x = images_bhwc.astype(jnp.float32)
  if jnp.issubdtype(images_bhwc.dtype, jnp.integer):
    x = x / 255.0
  return x.reshape(x.shape[0], -1)


def wordpieces(text_mask_bl):
  """bool[B, L]: the row's wordpieces, its valid tokens but the first ([CLS]) and the last
  ([SEP]), as TextTokenizer marks the maskable ones."""
  valid = text_mask_bl.astype(bool)
  index_l = jnp.arange(valid.shape[1])
  last_b1 = valid.sum(1, keepdims=True) - 1
  return valid & (index_l > 0) & (index_l < last_b1)


def bag_of_words(text_ids_bl, text_mask_bl, vocab_size):
  """f32[B, vocab_size]: per row, how often each id occurs among its wordpieces (a scatter-add,
  not a one-hot: [B, L, V] would not fit for a BERT vocab)."""
  w_bl = wordpieces(text_mask_bl).astype(jnp.float32)
  count = lambda ids_l, w_l: jnp.zeros((vocab_size,), jnp.float32).at[ids_l].add(w_l)
  return jax.vmap(count)(text_ids_bl.astype(jnp.int32), w_bl)


def log_mel(audio_bt, audio_mask_bt, audio_cfg, sample_rate):
  """(f32[B, frames, n_mels] log-mel spectrogram, bool[B, frames] valid frames), as
  AudioTokenizer computes them before patching."""
  fmax = float(audio_cfg.fmax) or sample_rate / 2  # 0 means Nyquist.
  spec_bfm = audio_frontend.log_mel_spectrogram(
      audio_bt.astype(jnp.float32), sample_rate=sample_rate, n_fft=audio_cfg.n_fft,
      hop=audio_cfg.hop, n_mels=audio_cfg.n_mels, fmin=float(audio_cfg.fmin), fmax=fmax)
  frame_valid_bf = audio_frontend.frame(audio_mask_bt.astype(jnp.float32), audio_cfg.n_fft,
                                        audio_cfg.hop).max(-1) > 0
  return spec_bfm, frame_valid_bf


def _image_features(model, batch):
  del model
  return standardize(pixels(batch["image"]))


def _text_features(model, batch):
  return jnp.log1p(bag_of_words(batch["text_ids"], batch["text_mask"], model.vocab_size))


def _audio_features(model, batch):
  spec_bfm, frame_valid_bf = log_mel(batch["audio"], batch["audio_mask"], model.audio_cfg,
                                     model.sample_rate)
  valid_bfm = jnp.broadcast_to(frame_valid_bf[..., None], spec_bfm.shape)
  flat = lambda x: einops.rearrange(x, "b f m -> b (f m)")
  return standardize(flat(spec_bfm), flat(valid_bfm))


# Per modality: (model, batch) -> f32[B, F] (F: feature_size). Modalities registered elsewhere
# have no raw features yet.
_FEATURES = {"image": _image_features, "text": _text_features, "audio": _audio_features}


def feature_size(modality, config, info):
  """F of `modality`'s block for dataset `info` under config.model."""
  if modality == "image":
    return math.prod(info.shapes["image"])
  if modality == "text":
    return info.vocab_size
  frames = tokenizers.logmel_frames(info.size("audio"), config.audio.n_fft, config.audio.hop)
  return frames * config.audio.n_mels


def check_config(config, info):
  """Raises UserError naming the key for a raw-baseline config that cannot work."""
  classifier.check_config(config, info)
  unknown = [m for m in config.inputs if m not in _FEATURES]
  if unknown:
    raise UserError(f"config.model.inputs={list(config.inputs)}: the raw baseline has "
                    f"features for {list(_FEATURES)} only, not {unknown}.")
  if "audio" in config.inputs:
    cfg = config.audio
    for key in ("n_fft", "hop", "n_mels"):
      if not isinstance(cfg[key], int) or cfg[key] <= 0:
        raise UserError(f"config.model.audio.{key}={cfg[key]!r}: must be a positive integer.")
    if info.size("audio") < cfg.n_fft:
      raise UserError(f"config.model.audio.n_fft={cfg.n_fft} is longer than the dataset's "
                      f"audio ({info.size('audio')} samples): no log-mel frame.")
  if "text" in config.inputs and not info.vocab_size:
    raise UserError(f"Dataset {info.name!r} has no vocab_size for a bag of words.")


class RawBaseline(nnx.Module):
  """Fixed features of the raw inputs (module docstring) and a zero-initialized Linear head."""
  classifies = True  # Outputs {'classification': ...} (mmjax.models.classifies).

  def __init__(self, config, info, *, rngs):
    check_config(config, info)
    self.inputs = modality_lib.ordered(config.inputs)
    self.vocab_size = info.vocab_size
    # Frozen: a static attribute of the graph definition must be hashable.
    self.audio_cfg = (ml_collections.FrozenConfigDict(config.audio) if "audio" in self.inputs
                      else None)
    self.sample_rate = info.sample_rate
    self.num_features = sum(feature_size(m, config, info) for m in self.inputs)
    # Zero-initialized (as the classifier's head): training starts from uniform logits.
    self.head = nnx.Linear(self.num_features, info.num_classes, dtype=jnp.dtype(config.dtype),
                           kernel_init=partitioned(ZEROS, None, None),
                           bias_init=partitioned(ZEROS, None), rngs=rngs)

  def features(self, batch):
    """f32[B, num_features]: each input's block (module docstring), in canonical order; zeros
    in the block of an example without that modality (has_<modality> False)."""
    b = batch["label"].shape[0]
    blocks = []
    for m in self.inputs:
      with jax.named_scope(f"raw_{m}"):  # Names the ops in profiles.
        x_bf = _FEATURES[m](self, batch)
      has = batch.get(presence_key(m))
      blocks.append(x_bf if has is None else x_bf * has.astype(jnp.float32).reshape(b, 1))
    return jnp.concatenate(blocks, axis=-1)

  def __call__(self, batch, *, key=None, mask_ratios=None, embeddings=None):
    """{'classification': {'logits' f32[B, classes], 'labels' int32[B]}}. (The keyword
    arguments of the pretraining model's call are accepted and unused.)"""
    del key, mask_ratios, embeddings
    logits = self.head(self.features(batch)).astype(jnp.float32)
    return {"classification": {"logits": logits, "labels": batch["label"]}}


MODEL = RawBaseline  # config.model.name="raw" (mmjax.models).
