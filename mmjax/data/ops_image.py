"""Image preprocessing ops (op strings: see mmjax.data.ops): decode, resize, crops, flips and
value scaling of uint8[H, W, C] images."""
import io
import math

import numpy as np

from mmjax.data import ops

_RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _resize(image, size, method):
  """uint8 (or float32) [H, W, C] -> [h, w, C] with PIL."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  filt = Image.Resampling[method.upper()]
  if image.dtype != np.uint8:
    image = image.astype(np.float32)
  # One channel at a time, as mode "L" (or "F"), so any number of channels works.
  channels = [Image.fromarray(np.ascontiguousarray(image[..., c])).resize(size[::-1], filt)
              for c in range(image.shape[-1])]
  return np.stack([np.asarray(c) for c in channels], axis=-1)


def _uint8(data, key, op):
  image = np.asarray(data[key])
  if image.dtype != np.uint8:
    raise ValueError(f"{op} expects {key!r} as uint8 in [0, 255], got {image.dtype}; put it "
                     "before ops that make floats.")
  return image


@ops.register("decode")
def get_decode(key="image", channels=3):
  """Encoded image bytes (PNG, JPEG, ...) -> uint8[H, W, channels] with PIL (channels 1: grey,
  3: RGB). Arrays pass through to the same check; a 2-D one gets a channel axis. Bytes that do
  not decode, or an array of another dtype or channel count, are a BadExample."""
  ops.check(channels in (1, 3), f"channels must be 1 or 3, got {channels!r}")
  def _op(data):
    image = data[key]
    if isinstance(image, (bytes, np.bytes_)):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      try:
        with Image.open(io.BytesIO(image)) as decoded:
          decoded.load()
          image = np.asarray(decoded.convert("L" if channels == 1 else "RGB"))
      except Exception as e:  # PIL raises several types for broken files.
        raise ops.BadExample(f"{key!r} bytes do not decode as an image ({e})") from None
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != channels:
      raise ops.BadExample(f"{key!r} is {image.dtype}{list(image.shape)}, expected "
                           f"uint8{[None, None, channels]}")
    return {**data, key: image}
  return _op


@ops.register("resize")
def get_resize(size, key="image", method="bilinear"):
  """[H, W, C] -> [h, w, C] with PIL's `method` filter; size is an int (square) or (h, w).
  uint8 stays uint8 (rounded by PIL); other dtypes are resized as float32."""
  size = ops.check_size(size)
  ops.check(method in _RESAMPLING, f"method must be one of {_RESAMPLING}, got {method!r}")
  def _op(data):
    return {**data, key: _resize(np.asarray(data[key]), size, method)}
  return _op


@ops.register("central_crop")
def get_central_crop(size, key="image"):
  """[H, W, C] -> the central [h, w, C]; size is an int (square) or (h, w). An image smaller
  than that is a BadExample."""
  h, w = ops.check_size(size)
  def _op(data):
    image = np.asarray(data[key])
    if image.shape[0] < h or image.shape[1] < w:
      raise ops.BadExample(f"{key!r} is {list(image.shape[:2])}, smaller than the "
                           f"central crop {[h, w]}")
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return {**data, key: image[top:top + h, left:left + w]}
  return _op


@ops.register("random_resized_crop", random=True)
def get_random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), key="image",
                            method="bilinear"):
  """Inception-style crop: a random box covering a `scale` fraction of the area with a
  log-uniform width/height `ratio`, resized to `size` (int or (h, w)).

  Tries 10 boxes; if none fits in the image, takes the largest central box whose ratio is in
  `ratio` instead.
  """
  size = ops.check_size(size)
  scale = ops.check_range(scale, "scale", 0)
  ops.check(scale[1] <= 1, f"scale must be at most 1, got {scale!r}")
  log_ratio = np.log(ops.check_range(ratio, "ratio", 0))
  ops.check(method in _RESAMPLING, f"method must be one of {_RESAMPLING}, got {method!r}")
  def _op(data, rng):
    image = np.asarray(data[key])
    height, width = image.shape[:2]
    for _ in range(10):
      area = height * width * rng.uniform(*scale)
      aspect = np.exp(rng.uniform(*log_ratio))
      w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if 0 < w <= width and 0 < h <= height:
        top = int(rng.integers(0, height - h, endpoint=True))
        left = int(rng.integers(0, width - w, endpoint=True))
        break
    else:
      aspect = np.clip(width / height, *np.exp(log_ratio))
      w, h = min(width, round(height * aspect)), min(height, round(width / aspect))
      top, left = (height - h) // 2, (width - w) // 2
    crop = image[top:top + h, left:left + w]
    return {**data, key: _resize(crop, size, method)}
  return _op


@ops.register("flip_lr", random=True)
def get_flip_lr(key="image", p=0.5):
  """Reverses the columns (axis 1) of [H, W, ...] with probability `p`."""
  ops.check(isinstance(p, (int, float)) and 0 <= p <= 1, f"p must be in [0, 1], got {p!r}")
  def _op(data, rng):
    return {**data, key: data[key][:, ::-1]} if rng.random() < p else data
  return _op


@ops.register("value_range")
def get_value_range(vmin=-1, vmax=1, key="image"):
  """uint8 in [0, 255] -> float32 in [vmin, vmax], linearly (0 -> vmin, 255 -> vmax)."""
  ops.check(vmin < vmax, f"need vmin < vmax, got {vmin!r}, {vmax!r}")
  def _op(data):
    image = _uint8(data, key, "value_range").astype(np.float32) / 255
    return {**data, key: (image * np.float32(vmax - vmin) + np.float32(vmin))}
  return _op


@ops.register("normalize")
def get_normalize(mean, std, key="image"):
  """uint8 -> float32 (x / 255 - mean) / std; mean and std are numbers or per-channel lists."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  ops.check(mean.ndim <= 1 and std.ndim <= 1, "mean and std must be numbers or per-channel lists")
  ops.check(np.all(std > 0), f"std must be positive, got {std.tolist()}")
  def _op(data):
    image = _uint8(data, key, "normalize").astype(np.float32) / 255
    return {**data, key: (image - mean) / std}
  return _op
