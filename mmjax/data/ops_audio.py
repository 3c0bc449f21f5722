"""Audio preprocessing ops (op strings: see mmjax.data.ops): checking, converting, resampling,
cropping and augmenting waveforms [T] (time_mask and freq_mask also spectrograms [T, F])."""
import math

import numpy as np

from mmjax.data import ops
from mmjax.errors import UserError


@ops.register("check_audio")
def get_check_audio(min_seconds=None, silence_dbfs=-60.0, key="audio", rate_key="sample_rate", *,
                    context):
  """An int16 waveform sampled at another rate than context['sample_rate'] (by the example's
  `rate_key`, when it has one), shorter than `min_seconds` (default: context
  ['min_audio_seconds'], i.e. data.min_audio_seconds) or peaking below `silence_dbfs` is a
  BadExample."""
  if min_seconds is None:
    min_seconds = context.get("min_audio_seconds", 0.0)
  ops.check(min_seconds >= 0, f"min_seconds must be >= 0, got {min_seconds!r}")
  if "sample_rate" not in context:
    raise ValueError("needs context['sample_rate'], which the caller of build() did not give")
  rate = context["sample_rate"]
  min_samples = round(min_seconds * rate)
  def _op(data):
    if rate_key in data and int(data[rate_key]) != rate:
      raise ops.BadExample(f"{key!r} is sampled at {int(data[rate_key])} Hz, but "
                           f"data.sample_rate is {rate} Hz")
    audio = np.asarray(data[key])
    if len(audio) < min_samples:
      raise ops.BadExample(f"{key!r} has {len(audio)} samples ({len(audio) / rate:.3f} s), "
                           f"fewer than {min_samples} (data.min_audio_seconds)")
    peak = np.abs(audio.astype(np.float32)).max() / 32768.0
    if peak <= 10.0 ** (silence_dbfs / 20.0):
      level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
      raise ops.BadExample(f"{key!r} is silent ({level}, below {silence_dbfs:.0f} dBFS)")
    return data
  return _op


@ops.register("to_float")
def get_to_float(key="audio"):
  """int16 waveform -> float32 in [-1, 1); a float one passes through (as float32)."""
  def _op(data):
    audio = np.asarray(data[key])
    if np.issubdtype(audio.dtype, np.floating):
      return {**data, key: np.asarray(audio, np.float32)}
    if audio.dtype != np.int16:
      raise ValueError(f"{key!r} should be int16, got {audio.dtype}.")
    return {**data, key: audio.astype(np.float32) / 32768.0}
  return _op


@ops.register("resample")
def get_resample(rate, key="audio", rate_key="sample_rate", *, context):
  """float waveform [T] -> [ceil(T * rate / source)] at `rate` Hz with
  scipy.signal.resample_poly. The source rate is the example's `rate_key` or, if it has none,
  context["sample_rate"]; sets `rate_key` to `rate`."""
  import scipy.signal  # pylint: disable=g-import-not-at-top
  rate = ops.check_int(rate, "rate")
  default_rate = context.get("sample_rate")
  def _op(data):
    if rate_key not in data and default_rate is None:
      raise UserError(f"resample: the example has no {rate_key!r} and the pipeline context "
                      "gives no 'sample_rate'; set rate_key to the key holding the rate.")
    source = int(data.get(rate_key, default_rate))
    audio = np.asarray(data[key])
    if not np.issubdtype(audio.dtype, np.floating):
      raise ValueError(f"resample expects a float {key!r}, got {audio.dtype}; put to_float "
                       "before it.")
    if source != rate:
      g = math.gcd(rate, source)
      audio = scipy.signal.resample_poly(audio, rate // g, source // g).astype(audio.dtype)
    return {**data, key: audio, rate_key: rate}
  return _op


def _place(audio, length, start):
  """Returns (audio[length], mask[length]): `audio` placed at `start` (< 0 crops its head)."""
  out = np.zeros((length,), audio.dtype)
  mask = np.zeros((length,), bool)
  src = audio[max(0, -start):][:length - max(0, start)]
  out[max(0, start):max(0, start) + len(src)] = src
  mask[max(0, start):max(0, start) + len(src)] = True
  return out, mask


@ops.register("crop_or_pad")
def get_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """[T] -> [length]: the first `length` samples, or zero-padded at the end; `mask_key`
  bool[length] is True on real samples."""
  length = ops.check_int(length, "length")
  def _op(data):
    audio, mask = _place(np.asarray(data[key]), length, 0)
    return {**data, key: audio, mask_key: mask}
  return _op


@ops.register("random_crop_or_pad", random=True)
def get_random_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """Like crop_or_pad, at a random offset: a random window of a long waveform, or a short one
  after a random stretch of zeros (anywhere it still fits whole)."""
  length = ops.check_int(length, "length")
  def _op(data, rng):
    audio = np.asarray(data[key])
    slack = length - len(audio)
    # slack >= 0: delay the start by 0..slack; slack < 0: skip 0..-slack samples.
    start = int(rng.integers(0, slack, endpoint=True)) if slack >= 0 else -int(
        rng.integers(0, -slack, endpoint=True))
    audio, mask = _place(audio, length, start)
    return {**data, key: audio, mask_key: mask}
  return _op


def _zero_bands(x, num, max_width, rng, axis):
  """Copy of `x` with `num` random spans along `axis`, each of 0..max_width entries, zeroed."""
  x = np.array(x)
  n = x.shape[axis]
  for _ in range(num):
    width = int(rng.integers(0, min(max_width, n), endpoint=True))
    start = int(rng.integers(0, n - width, endpoint=True))
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + width)
    x[tuple(index)] = 0
  return x


@ops.register("time_mask", random=True)
def get_time_mask(num, max_width, key="audio"):
  """SpecAugment time masking: zeroes `num` random spans (they may overlap) of 0..max_width
  entries along the first axis of `key` (waveform samples, or spectrogram frames)."""
  num, max_width = ops.check_int(num, "num", 0), ops.check_int(max_width, "max_width", 0)
  def _op(data, rng):
    return {**data, key: _zero_bands(data[key], num, max_width, rng, axis=0)}
  return _op


@ops.register("freq_mask", random=True)
def get_freq_mask(num, max_width, key="audio"):
  """SpecAugment frequency masking: zeroes `num` random bands (they may overlap) of
  0..max_width frequency bins. A float waveform [T] goes through rfft and back (irfft to T
  samples); a spectrogram [T, F] has bands of its last axis zeroed."""
  num, max_width = ops.check_int(num, "num", 0), ops.check_int(max_width, "max_width", 0)
  def _op(data, rng):
    x = np.asarray(data[key])
    if x.ndim == 2:
      return {**data, key: _zero_bands(x, num, max_width, rng, axis=1)}
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"freq_mask expects a float waveform [T] or a spectrogram [T, F] in "
                       f"{key!r}, got {x.dtype}{list(x.shape)}")
    spectrum = _zero_bands(np.fft.rfft(x), num, max_width, rng, axis=0)
    return {**data, key: np.fft.irfft(spectrum, n=len(x)).astype(x.dtype)}
  return _op


@ops.register("random_gain", random=True)
def get_random_gain(min_db, max_db, key="audio"):
  """Scales a float waveform by a gain drawn uniformly in [min_db, max_db] dB, clipped to
  [-1, 1]."""
  ops.check(min_db <= max_db, f"min_db must be <= max_db, got {min_db!r}, {max_db!r}")
  min_db, max_db = float(min_db), float(max_db)
  def _op(data, rng):
    gain = 10.0 ** (rng.uniform(min_db, max_db) / 20.0)
    audio = np.clip(np.asarray(data[key]) * np.float32(gain), -1.0, 1.0)
    return {**data, key: audio.astype(np.float32)}
  return _op
