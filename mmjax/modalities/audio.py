"""Audio: float32[B, T] waveforms with audio_mask bool[B, T], tokenized as patches of a log-mel
spectrogram computed on the accelerator (AST, AudioMAE) or as raw waveform frames (VATT), and
masked audio modeling (objective masked_audio) regressing the hidden patches."""
import os

import ml_collections
import numpy as np

from mmjax import modality
from mmjax.data import ops
from mmjax.data import ops_audio
from mmjax.errors import UserError
from mmjax.models import tokenizers

# Training-time augmentation: a random start offset and a random gain in this range (dB).
# espeak-ng peaks near 0.65 of full scale, so +3 dB still does not clip.
GAIN_DB = (-10.0, 3.0)
EXTENSIONS = (".wav", ".wave")
MAX_SAMPLE_RATE = 384_000  # Higher rates are a broken header, and their resampling is slow.


def _read_wav(path):
  """(rate, samples) of a WAV file. A memory map reads only the header, so the length is
  known before the samples are read; 24-bit samples and truncated files need a full read."""
  from scipy.io import wavfile  # pylint: disable=g-import-not-at-top
  for mmap in (True, False):
    try:
      return wavfile.read(path, mmap=mmap)
    except Exception as e:  # scipy raises ValueError and others for broken files.
      error = e
  raise ops.BadExample(f"audio {os.path.basename(path)!r} is not a readable WAV file ({error})")


def read_audio(path, opts):
  """int16 waveform of the WAV file at `path`, mono, resampled to opts.sample_rate; checked
  against opts.max_audio_seconds and opts.min_audio_seconds, and for silence."""
  from scipy import signal  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path)
  rate, wave = _read_wav(path)
  if not 1 <= rate <= MAX_SAMPLE_RATE:
    raise ops.BadExample(f"audio {name!r} says it is sampled at {rate} Hz")
  if len(wave) > opts.max_audio_seconds * rate:
    raise ops.BadExample(f"audio {name!r} is {len(wave) / rate:.1f} s long, over "
                         f"--max_audio_seconds={opts.max_audio_seconds:g}")
  wave = np.asarray(wave)
  if wave.size == 0:
    raise ops.BadExample(f"audio {name!r} has no samples")
  if wave.dtype.kind in "iu":
    info = np.iinfo(wave.dtype)
    wave = (wave.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max + 1 - (
        info.max + info.min + 1) / 2)
  wave = wave.astype(np.float64)
  if not np.isfinite(wave).all():
    raise ops.BadExample(f"audio {name!r} holds NaN or infinite samples")
  if wave.ndim == 2:
    wave = wave.mean(axis=1)
  if rate != opts.sample_rate:
    g = np.gcd(rate, opts.sample_rate)
    wave = signal.resample_poly(wave, opts.sample_rate // g, rate // g)
  wave = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)
  ops_audio.get_check_audio(opts.min_audio_seconds,
                            context={"sample_rate": opts.sample_rate})({"audio": wave})
  return wave


class Audio(modality.Modality):
  name = "audio"
  order = 2  # Canonical order: image, text, audio (mmjax.modality).
  dtypes = {"audio": np.float32, "audio_mask": bool}
  feature = "audio"
  info_fields = agree = ("sample_rate",)  # One model hears every mixture entry.

  def example_shapes(self, size):
    return {"audio": (size,), "audio_mask": (size,)}

  def size(self, info):
    return info.shapes["audio"][0]

  def check_data_config(self, data_cfg, need):
    need(data_cfg.sample_rate > 0, "sample_rate", "must be a positive number of Hz, e.g. 8000.")
    need(data_cfg.audio_seconds > 0, "audio_seconds", "must be positive, e.g. 1.0.")
    need(round(data_cfg.audio_seconds * data_cfg.sample_rate) >= 1, "audio_seconds",
         "is shorter than one sample at data.sample_rate.")
    need(0 <= data_cfg.min_audio_seconds <= data_cfg.audio_seconds, "min_audio_seconds",
         f"must be in [0, data.audio_seconds={data_cfg.audio_seconds}].")

  def stored_shapes(self, data_cfg, features):
    del features
    return self.example_shapes(round(data_cfg.audio_seconds * data_cfg.sample_rate))

  def default_pp(self, data_cfg, shapes, *, train):
    """Checks, then a crop or pad to data.audio_seconds; in training with data.augment, at a
    random offset and with a random gain."""
    length = shapes["audio"][0]
    return ["check_audio", "to_float"] + (
        [f"random_crop_or_pad({length})", "random_gain({}, {})".format(*GAIN_DB)]
        if train and data_cfg.augment else [f"crop_or_pad({length})"])

  def pp_context(self, data_cfg, info):
    del info
    return {"sample_rate": data_cfg.sample_rate,
            "min_audio_seconds": data_cfg.min_audio_seconds}

  def describe(self, data_cfg, dataset):
    """The stored sample rate must be data.sample_rate (also checked per example by
    check_audio; this says it up front)."""
    stored = [(dataset.known.sample_rate if dataset.known else 0),
              (dataset.builder.info.metadata or {}).get("sample_rate")]
    if "sample_rate" in dataset.features:
      stored.append(dataset.first_train_example()["sample_rate"])
    for rate in stored:
      if rate and int(rate) != data_cfg.sample_rate:
        raise UserError(f"data.sample_rate={data_cfg.sample_rate}, but {data_cfg.name}'s audio "
                        f"is stored at {int(rate)} Hz: set --config.data.sample_rate="
                        f"{int(rate)}.")
    return {"sample_rate": data_cfg.sample_rate}

  def build_features(self, opts):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    del opts
    # Raw bytes, not an int64 list (10 bytes per negative sample); the rate goes with each
    # example, and the loader checks it against data.sample_rate.
    return {"audio": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                          encoding=tfds.features.Encoding.BYTES),
            "sample_rate": tfds.features.Scalar(dtype=np.int32)}

  def read(self, value, opts):
    return ({"audio": read_audio(value, opts), "sample_rate": opts.sample_rate},
            modality.extension_note("audio", value, EXTENSIONS, "WAV"))

  def model_config(self):
    return ml_collections.ConfigDict(dict(
        frontend="logmel",  # 'logmel' (spectrogram patches) or 'waveform' (VATT frames).
        n_fft=256, hop=128, n_mels=32,
        fmin=0.0, fmax=0.0,  # 0 means sample_rate / 2.
        patch_time=4, patch_freq=8,  # logmel patch: frames x mel bands.
        frame_size=256,  # waveform frame in samples.
    ))

  def check_model_config(self, cfg):
    if cfg.frontend not in ("logmel", "waveform"):
      raise UserError(f"config.model.audio.frontend={cfg.frontend!r}: use 'logmel' or "
                      "'waveform'.")
    # Whether the windows fit the inputs is known once the dataset is (token_grid).
    keys = (("n_fft", "hop", "n_mels", "patch_time", "patch_freq") if cfg.frontend == "logmel"
            else ("frame_size",))
    for key in keys:
      if not isinstance(cfg[key], int) or cfg[key] <= 0:
        raise UserError(f"config.model.audio.{key}={cfg[key]!r}: must be a positive integer.")
    if cfg.frontend == "logmel" and cfg.n_mels % cfg.patch_freq:
      raise UserError(f"config.model.audio.patch_freq={cfg.patch_freq} does not divide "
                      f"n_mels={cfg.n_mels}.")

  def token_grid(self, model_cfg, info):
    return tokenizers.audio_grid(model_cfg.audio, self.size(info), info.sample_rate)

  def out_dim(self, model_cfg, info):
    del info
    cfg = model_cfg.audio
    return cfg.patch_time * cfg.patch_freq if cfg.frontend == "logmel" else cfg.frame_size

  def tokenizer(self, model_cfg, info, width, *, dtype, rngs):
    return tokenizers.AudioTokenizer(model_cfg.audio, info.sample_rate, width, dtype=dtype,
                                     rngs=rngs, **tokenizers.settings(model_cfg, self.name))


MODALITY = Audio()
