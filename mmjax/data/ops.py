"""Preprocessing ops named in config by a big_vision-style op string.

  "decode|resize(32)|flip_lr|value_range(-1, 1)|tokenize(16, key='caption')"

Ops are separated by `|`; each is a registered name, optionally called with literal Python
arguments. Every op reads (and writes) keys it is told with `key=` and friends, so the same ops
serve images, text and audio. `build` parses the string and constructs every op, so a typo or a
bad argument is a UserError at config-load time, before any data is read. Ops work on
single-example feature dicts of numpy arrays and return a new dict, like those of
`mmjax.data.preprocess`; random ops take all their randomness from an np.random.Generator.
"""
import ast
import collections
import difflib
import inspect
import math

import numpy as np

from mmjax.data import preprocess
from mmjax.errors import UserError

# A registered op: `factory(*args, **kwargs)` returns `data -> data`, or `(data, rng) -> data`
# when `random`.
OpDef = collections.namedtuple("OpDef", ["factory", "random"])
OPS = {}


def register(name, *, random=False):
  """Decorator: registers an op factory under `name` for op strings.

  A factory with a keyword-only `context` parameter gets the `context` dict given to `build`.
  Factories check their arguments and raise ValueError or TypeError for bad ones.
  """
  def _register(factory):
    OPS[name] = OpDef(factory, random)
    return factory
  return _register


def _format(name, args, kwargs):
  """(name, args, kwargs) -> the op's text, e.g. "resize(32, method='nearest')"."""
  if not args and not kwargs:
    return name
  return f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def parse(spec, *, where="data.pp"):
  """Op string (or list of them, joined with `|`) -> [(name, args tuple, kwargs dict)].

  Raises UserError, naming `where`, for a syntax error, an unknown op name or an argument that
  is not a Python literal. An empty string is no ops.
  """
  if not isinstance(spec, str):
    spec = "|".join(spec)
  if not spec.strip():
    return []
  ops = []
  for i, text in enumerate(t.strip() for t in spec.split("|")):
    at = f"{where}: op {i + 1} {text!r}"
    try:
      node = ast.parse(text, mode="eval").body if text else None
    except SyntaxError as e:
      raise UserError(f"{at}: not valid op syntax ({e.msg}); write name or "
                      "name(arg, key=value) with literal arguments") from None
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call else node
    if not isinstance(name_node, ast.Name):
      raise UserError(f"{at}: expected an op name, optionally followed by (arguments)")
    name = name_node.id
    if name not in OPS:
      close = difflib.get_close_matches(name, OPS, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UserError(f"{at}: unknown op {name!r}.{hint} Known ops: {', '.join(sorted(OPS))}.")
    args, kwargs = (), {}
    if call:
      if any(isinstance(a, ast.Starred) for a in call.args) or any(
          k.arg is None for k in call.keywords):
        raise UserError(f"{at}: *args and **kwargs are not supported; write each argument out")
      try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
      except (ValueError, TypeError, SyntaxError):
        raise UserError(f"{at}: arguments must be Python literals (numbers, strings, tuples, "
                        "lists, None, True/False), not expressions or names") from None
    ops.append((name, args, kwargs))
  return ops


class Pipeline:
  """Built ops, applied in order by `pipeline(data, rng=None)`."""

  def __init__(self, ops, where="data.pp"):
    # ops: [(text, fn, random)].
    self._ops = list(ops)
    self.where = where

  @property
  def is_random(self):
    return any(random for _, _, random in self._ops)

  def __call__(self, data, rng=None):
    if rng is None and self.is_random:
      names = [text for text, _, random in self._ops if random]
      raise ValueError(f"{self.where}: the random ops {names} need an rng: call the pipeline "
                       "as pipeline(data, rng) with an np.random.Generator.")
    for i, (text, fn, random) in enumerate(self._ops):
      try:
        data = fn(data, rng) if random else fn(data)
      except KeyError as e:
        # Key names come from the config, so a missing one is the user's to fix.
        if e.args and e.args[0] not in data:
          raise UserError(f"{self.where}: op {text!r} reads {e.args[0]!r}, which the example "
                          f"does not have; it has {sorted(data)}. Fix the op's key "
                          "argument or an earlier op.") from None
        raise
      except Exception as e:
        e.add_note(f"in {self.where} op {i + 1} {text!r}")
        raise
    return data

  def __repr__(self):
    return f"Pipeline({'|'.join(text for text, _, _ in self._ops)!r})"


def build(spec, context=None, *, where="data.pp"):
  """Parses `spec` and constructs every op -> Pipeline.

  Args:
    spec: op string, or a list of them.
    context: dict of things ops may need, e.g. {"tokenizer_factory": max_len -> tokenizer,
      "sample_rate": 16000}.
    where: the config field `spec` came from, for error messages.

  Raises:
    UserError naming `where`, the op and the problem, for an unknown op, a bad argument or a
    context entry an op needs but `context` lacks.
  """
  context = dict(context or {})
  ops = []
  for i, (name, args, kwargs) in enumerate(parse(spec, where=where)):
    factory, random = OPS[name]
    text = _format(name, args, kwargs)
    sig = inspect.signature(factory)
    extra = {"context": context} if "context" in sig.parameters else {}
    usage = name + str(sig.replace(
        parameters=[p for p in sig.parameters.values() if p.name != "context"]))
    try:
      if "context" in kwargs:
        raise TypeError("context is not an op argument; it comes from the caller of build()")
      sig.bind(*args, **kwargs, **extra)  # A wrong argument count or name is a TypeError.
      fn = factory(*args, **kwargs, **extra)
    except (TypeError, ValueError, UserError) as e:
      raise UserError(f"{where}: op {i + 1} {text!r}: {e}. Usage: {usage}") from None
    ops.append((text, fn, random))
  return Pipeline(ops, where)


# Argument checks, run when an op is built.


def _check(ok, message):
  if not ok:
    raise ValueError(message)


def _int(value, name, minimum=1):
  _check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
         f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def _size(size):
  """int or (h, w) -> (h, w) of positive ints."""
  if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
    return (_int(size, "size"),) * 2
  _check(isinstance(size, (tuple, list)) and len(size) == 2,
         f"size must be an int or an (height, width) pair, got {size!r}")
  return _int(size[0], "height"), _int(size[1], "width")


def _range(pair, name, low):
  """(a, b) with low < a <= b -> (float a, float b)."""
  _check(isinstance(pair, (tuple, list)) and len(pair) == 2
         and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair),
         f"{name} must be a (min, max) pair of numbers, got {pair!r}")
  _check(low < pair[0] <= pair[1], f"{name} must have {low} < min <= max, got {pair!r}")
  return float(pair[0]), float(pair[1])


def _keys(keys, name="keys"):
  _check(keys and all(isinstance(k, str) for k in keys),
         f"{name} must be one or more strings, got {keys!r}")
  return keys


# Images.

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


@register("decode")
def get_decode(key="image", channels=3):
  """Encoded image bytes (PNG, JPEG, ...) -> uint8[H, W, channels] with PIL (channels 1: grey,
  3: RGB). Arrays pass through; a 2-D one gets a channel axis. Bytes that do not decode are a
  BadExample."""
  _check(channels in (1, 3), f"channels must be 1 or 3, got {channels!r}")
  return preprocess.get_decode_image((None, None, channels), key)


@register("resize")
def get_resize(size, key="image", method="bilinear"):
  """[H, W, C] -> [h, w, C] with PIL's `method` filter; size is an int (square) or (h, w).
  uint8 stays uint8 (rounded by PIL); other dtypes are resized as float32."""
  size = _size(size)
  _check(method in _RESAMPLING, f"method must be one of {_RESAMPLING}, got {method!r}")
  def _op(data):
    return {**data, key: _resize(np.asarray(data[key]), size, method)}
  return _op


@register("central_crop")
def get_central_crop(size, key="image"):
  """[H, W, C] -> the central [h, w, C]; size is an int (square) or (h, w). An image smaller
  than that is a BadExample."""
  h, w = _size(size)
  def _op(data):
    image = np.asarray(data[key])
    if image.shape[0] < h or image.shape[1] < w:
      raise preprocess.BadExample(f"{key!r} is {list(image.shape[:2])}, smaller than the "
                                  f"central crop {[h, w]}")
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return {**data, key: image[top:top + h, left:left + w]}
  return _op


@register("random_resized_crop", random=True)
def get_random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), key="image",
                            method="bilinear"):
  """Inception-style crop: a random box covering a `scale` fraction of the area with a
  log-uniform width/height `ratio`, resized to `size` (int or (h, w)).

  Tries 10 boxes; if none fits in the image, takes the largest central box whose ratio is in
  `ratio` instead.
  """
  size = _size(size)
  scale = _range(scale, "scale", 0)
  _check(scale[1] <= 1, f"scale must be at most 1, got {scale!r}")
  log_ratio = np.log(_range(ratio, "ratio", 0))
  _check(method in _RESAMPLING, f"method must be one of {_RESAMPLING}, got {method!r}")
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


@register("flip_lr", random=True)
def get_flip_lr(key="image", p=0.5):
  """Reverses the columns (axis 1) of [H, W, ...] with probability `p`."""
  _check(isinstance(p, (int, float)) and 0 <= p <= 1, f"p must be in [0, 1], got {p!r}")
  def _op(data, rng):
    return {**data, key: data[key][:, ::-1]} if rng.random() < p else data
  return _op


@register("value_range")
def get_value_range(vmin=-1, vmax=1, key="image"):
  """uint8 in [0, 255] -> float32 in [vmin, vmax], linearly (0 -> vmin, 255 -> vmax)."""
  _check(vmin < vmax, f"need vmin < vmax, got {vmin!r}, {vmax!r}")
  def _op(data):
    image = _uint8(data, key, "value_range").astype(np.float32) / 255
    return {**data, key: (image * np.float32(vmax - vmin) + np.float32(vmin))}
  return _op


@register("normalize")
def get_normalize(mean, std, key="image"):
  """uint8 -> float32 (x / 255 - mean) / std; mean and std are numbers or per-channel lists."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  _check(mean.ndim <= 1 and std.ndim <= 1, "mean and std must be numbers or per-channel lists")
  _check(np.all(std > 0), f"std must be positive, got {std.tolist()}")
  def _op(data):
    image = _uint8(data, key, "normalize").astype(np.float32) / 255
    return {**data, key: (image - mean) / std}
  return _op


# Text.


@register("tokenize")
def get_tokenize(max_len, key="caption", ids_key="text_ids", mask_key="text_mask", *, context):
  """str/bytes (UTF-8) text -> `ids_key` int32[max_len] and `mask_key` bool[max_len] with
  `context["tokenizer_factory"](max_len)` (e.g. a WordPieceTokenizer); drops `key`."""
  max_len = _int(max_len, "max_len")
  if "tokenizer_factory" not in context:
    raise ValueError("needs context['tokenizer_factory'], a callable max_len -> tokenizer, "
                     "which the caller of build() did not give")
  return preprocess.get_tokenize(context["tokenizer_factory"](max_len), key, ids_key, mask_key)


@register("pad_or_truncate")
def get_pad_or_truncate(length, key="text_ids", pad_value=0):
  """[T] -> [length]: the first `length` items, or all of them followed by `pad_value`s."""
  length = _int(length, "length")
  def _op(data):
    x = np.asarray(data[key])
    if x.ndim != 1:
      raise ValueError(f"pad_or_truncate expects a 1-D {key!r}, got shape {x.shape}")
    out = np.full((length,), pad_value, x.dtype)
    out[:min(length, len(x))] = x[:length]
    return {**data, key: out}
  return _op


@register("choose", random=True)
def get_choose(key="captions", out_key="caption"):
  """Sets `out_key` to one item of the list or array `key` (e.g. one of an image's several
  captions), uniformly at random; `key` is kept unless it is `out_key`. An empty `key`
  is a BadExample."""
  def _op(data, rng):
    items = data[key]
    if len(items) == 0:
      raise preprocess.BadExample(f"{key!r} is empty, there is nothing to choose from")
    return {**data, out_key: items[int(rng.integers(len(items)))]}
  return _op


# Audio.


@register("to_float")
def get_to_float(key="audio"):
  """int16 waveform -> float32 in [-1, 1); a float one passes through (as float32)."""
  to_float = preprocess.get_audio_to_float(key)
  def _op(data):
    if np.issubdtype(np.asarray(data[key]).dtype, np.floating):
      return {**data, key: np.asarray(data[key], np.float32)}
    return to_float(data)
  return _op


@register("resample")
def get_resample(rate, key="audio", rate_key="sample_rate", *, context):
  """float waveform [T] -> [ceil(T * rate / source)] at `rate` Hz with
  scipy.signal.resample_poly. The source rate is the example's `rate_key` or, if it has none,
  context["sample_rate"]; sets `rate_key` to `rate`."""
  import scipy.signal  # pylint: disable=g-import-not-at-top
  rate = _int(rate, "rate")
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


@register("crop_or_pad")
def get_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """[T] -> [length]: the first `length` samples, or zero-padded at the end; `mask_key`
  bool[length] is True on real samples."""
  return preprocess.get_crop_or_pad(_int(length, "length"), key, mask_key)


@register("random_crop_or_pad", random=True)
def get_random_crop_or_pad(length, key="audio", mask_key="audio_mask"):
  """Like crop_or_pad, at a random offset: a random window of a long waveform, or a short one
  after a random stretch of zeros."""
  return preprocess.get_random_crop_or_pad(_int(length, "length"), key, mask_key)


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


@register("time_mask", random=True)
def get_time_mask(num, max_width, key="audio"):
  """SpecAugment time masking: zeroes `num` random spans (they may overlap) of 0..max_width
  entries along the first axis of `key` (waveform samples, or spectrogram frames)."""
  num, max_width = _int(num, "num", 0), _int(max_width, "max_width", 0)
  def _op(data, rng):
    return {**data, key: _zero_bands(data[key], num, max_width, rng, axis=0)}
  return _op


@register("freq_mask", random=True)
def get_freq_mask(num, max_width, key="audio"):
  """SpecAugment frequency masking: zeroes `num` random bands (they may overlap) of
  0..max_width frequency bins. A float waveform [T] goes through rfft and back (irfft to T
  samples); a spectrogram [T, F] has bands of its last axis zeroed."""
  num, max_width = _int(num, "num", 0), _int(max_width, "max_width", 0)
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


@register("random_gain", random=True)
def get_random_gain(min_db, max_db, key="audio"):
  """Scales a float waveform by a gain drawn uniformly in [min_db, max_db] dB, clipped to
  [-1, 1]."""
  _check(min_db <= max_db, f"min_db must be <= max_db, got {min_db!r}, {max_db!r}")
  return preprocess.get_random_gain(float(min_db), float(max_db), key)


# Checks: a BadExample for an example that cannot be used (data.on_bad_example decides).


@register("check_text")
def get_check_text(key="caption"):
  """bytes -> str; text that is not UTF-8, or empty after stripping, is a BadExample."""
  return preprocess.get_check_text(key)


@register("check_audio")
def get_check_audio(min_seconds=None, silence_dbfs=-60.0, key="audio", rate_key="sample_rate", *,
                    context):
  """An int16 waveform sampled at another rate than context['sample_rate'] (by the example's
  `rate_key`, when it has one), shorter than `min_seconds` (default: context
  ['min_audio_seconds'], i.e. data.min_audio_seconds) or peaking below `silence_dbfs` is a
  BadExample."""
  if min_seconds is None:
    min_seconds = context.get("min_audio_seconds", 0.0)
  _check(min_seconds >= 0, f"min_seconds must be >= 0, got {min_seconds!r}")
  if "sample_rate" not in context:
    raise ValueError("needs context['sample_rate'], which the caller of build() did not give")
  rate = context["sample_rate"]
  return preprocess.get_check_audio(rate, round(min_seconds * rate), silence_dbfs, key, rate_key)


# General.


@register("keep")
def get_keep(*keys):
  """Drops every key but `keys` (in that order)."""
  return preprocess.get_keep(*_keys(keys))


@register("drop")
def get_drop(*keys):
  """Removes `keys` (each must be present)."""
  keys = _keys(keys)
  def _op(data):
    missing = [k for k in keys if k not in data]
    if missing:
      raise KeyError(missing[0])
    return {k: v for k, v in data.items() if k not in keys}
  return _op


@register("rename")
def get_rename(**new_from_old):
  """rename(new='old', ...): moves each `old` key to `new` (overwriting a `new` already there)."""
  _keys(list(new_from_old.values()), "the old key names")
  def _op(data):
    out = {k: v for k, v in data.items() if k not in new_from_old.values()}
    return {**out, **{new: data[old] for new, old in new_from_old.items()}}
  return _op


@register("cast")
def get_cast(dtype, key="label"):
  """Casts `key` to `dtype`, a numpy dtype name such as 'int32'."""
  try:
    dtype = np.dtype(dtype)
  except TypeError:
    raise ValueError(f"dtype must be a numpy dtype name such as 'int32', got {dtype!r}") from None
  return preprocess.get_cast(dtype, key)
