"""Preprocessing ops on single-example feature dicts (numpy), in the style of big_vision's pp.

Each `get_*` function takes the op's settings, including the key(s) it reads and writes, and
returns the op: a function `data -> data` (a new dict; the input is not modified). Random ops
return `(data, rng) -> data` and take all their randomness from `rng`, an np.random.Generator,
so a loader that seeds `rng` per example makes them reproducible.

Check ops raise `BadExample(reason)` for an example that cannot be used (an image that does not
decode, empty or non-UTF-8 text, silent or too-short audio, a wrong sample rate); the loader
names the example and stops, or skips it and counts (data.on_bad_example).
"""
import io

import numpy as np


class BadExample(ValueError):
  """An example that cannot be trained on; the message says what is wrong with it."""


def get_decode_image(shape, key="image"):
  """Encoded image bytes (PNG, JPEG, ...) -> uint8[H,W,C] of `shape` (None: any size, e.g.
  (None, None, 3)); arrays pass through to the same check. Bytes that do not decode, or another
  shape, are a BadExample."""
  def _op(data):
    image = data[key]
    if isinstance(image, (bytes, np.bytes_)):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      try:
        with Image.open(io.BytesIO(image)) as decoded:
          decoded.load()
          image = np.asarray(decoded.convert("L" if shape[-1] == 1 else "RGB"))
      except Exception as e:  # PIL raises several types for broken files.
        raise BadExample(f"{key!r} bytes do not decode as an image ({e})") from None
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != len(shape) or any(
        want is not None and have != want for have, want in zip(image.shape, shape)):
      raise BadExample(f"{key!r} is {image.dtype}{list(image.shape)}, expected "
                       f"uint8{list(shape)}")
    return {**data, key: image}
  return _op


def get_check_text(key="caption"):
  """bytes/str -> str; text that is not UTF-8, or empty after stripping, is a BadExample."""
  def _op(data):
    text = data[key]
    if isinstance(text, (bytes, np.bytes_)):
      try:
        text = bytes(text).decode("utf-8")
      except UnicodeDecodeError as e:
        raise BadExample(f"{key!r} is not UTF-8 (byte {text[e.start]:#04x} at position "
                         f"{e.start})") from None
    if not str(text).strip():
      raise BadExample(f"{key!r} is empty")
    return {**data, key: str(text)}
  return _op


def get_check_audio(sample_rate, min_samples, silence_dbfs=-60.0, key="audio",
                    rate_key="sample_rate"):
  """int16 waveform checks: a BadExample if the example says it was sampled at another rate
  (`rate_key`, when present), is shorter than `min_samples`, or peaks below `silence_dbfs`."""
  def _op(data):
    if rate_key in data and int(data[rate_key]) != sample_rate:
      raise BadExample(f"{key!r} is sampled at {int(data[rate_key])} Hz, but data.sample_rate "
                       f"is {sample_rate} Hz")
    audio = np.asarray(data[key])
    if len(audio) < min_samples:
      raise BadExample(f"{key!r} has {len(audio)} samples ({len(audio) / sample_rate:.3f} s), "
                       f"fewer than {min_samples} (data.min_audio_seconds)")
    peak = np.abs(audio.astype(np.float32)).max() / 32768.0
    if peak <= 10.0 ** (silence_dbfs / 20.0):
      level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
      raise BadExample(f"{key!r} is silent ({level}, below {silence_dbfs:.0f} dBFS)")
    return data
  return _op


def get_tokenize(tokenizer, key="caption", ids_key="text_ids", mask_key="text_mask"):
  """str/bytes text -> `ids_key` int32[L] and `mask_key` bool[L] with a WordPieceTokenizer."""
  def _op(data):
    text = data[key]
    if isinstance(text, bytes):  # TFDS text features decode to bytes.
      text = text.decode("utf-8")
    ids, mask = tokenizer.encode([text])
    out = {k: v for k, v in data.items() if k != key}
    return {**out, ids_key: ids[0], mask_key: mask[0]}
  return _op


def get_audio_to_float(key="audio"):
  """int16[T] -> float32[T] in [-1, 1)."""
  def _op(data):
    audio = np.asarray(data[key])
    if audio.dtype != np.int16:
      raise ValueError(f"{key!r} should be int16, got {audio.dtype}.")
    return {**data, key: audio.astype(np.float32) / 32768.0}
  return _op


def _place(audio, length, start):
  """Returns (audio[length], mask[length]): `audio` placed at `start` (< 0 crops its head)."""
  out = np.zeros((length,), audio.dtype)
  mask = np.zeros((length,), bool)
  src = audio[max(0, -start):][:length - max(0, start)]
  out[max(0, start):max(0, start) + len(src)] = src
  mask[max(0, start):max(0, start) + len(src)] = True
  return out, mask


def get_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """[T] -> [length]: keeps the first `length` samples or pads with zeros at the end.

  Adds `mask_key` bool[length], True where a sample comes from the waveform.
  """
  def _op(data):
    audio, mask = _place(np.asarray(data[key]), length, 0)
    return {**data, key: audio, mask_key: mask}
  return _op


def get_random_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """Like get_crop_or_pad, but at a random offset: a random window of a long waveform, or a
  short one starting after a random stretch of silence (anywhere it still fits whole)."""
  def _op(data, rng):
    audio = np.asarray(data[key])
    slack = length - len(audio)
    # slack >= 0: delay the start by 0..slack; slack < 0: skip 0..-slack samples.
    start = int(rng.integers(0, slack, endpoint=True)) if slack >= 0 else -int(
        rng.integers(0, -slack, endpoint=True))
    audio, mask = _place(audio, length, start)
    return {**data, key: audio, mask_key: mask}
  return _op


def get_random_gain(min_db, max_db, key="audio"):
  """Scales float audio by a gain drawn uniformly in [min_db, max_db] dB, clipped to [-1, 1]."""
  def _op(data, rng):
    gain = 10.0 ** (rng.uniform(min_db, max_db) / 20.0)
    audio = np.clip(np.asarray(data[key]) * np.float32(gain), -1.0, 1.0)
    return {**data, key: audio.astype(np.float32)}
  return _op


def get_cast(dtype, key):
  """Casts `key` to `dtype` (e.g. TFDS's Python-int labels to int32)."""
  def _op(data):
    return {**data, key: np.asarray(data[key], dtype=dtype)}
  return _op


def get_keep(*keys):
  """Drops every key but `keys` (in that order)."""
  def _op(data):
    return {k: data[k] for k in keys}
  return _op
