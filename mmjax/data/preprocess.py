"""Preprocessing ops on single-example feature dicts (numpy), in the style of big_vision's pp.

Each `get_*` function takes the op's settings, including the key(s) it reads and writes, and
returns the op: a function `data -> data` (a new dict; the input is not modified). Random ops
return `(data, rng) -> data` and take all their randomness from `rng`, an np.random.Generator,
so a loader that seeds `rng` per example makes them reproducible.
"""
import numpy as np


def get_image_uint8(key="image"):
  """uint8[H,W,C] image: adds a channel axis to [H,W] images and checks the dtype."""
  def _op(data):
    image = np.asarray(data[key])
    if image.dtype != np.uint8:
      raise ValueError(f"{key!r} should be uint8, got {image.dtype}.")
    if image.ndim == 2:
      image = image[..., None]
    return {**data, key: image}
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


def chain(ops):
  """One deterministic op that applies `ops` in order."""
  def _op(data):
    for op in ops:
      data = op(data)
    return data
  return _op


def chain_random(ops):
  """One random op that applies random `ops` in order, all drawing from the same rng."""
  def _op(data, rng):
    for op in ops:
      data = op(data, rng)
    return data
  return _op
