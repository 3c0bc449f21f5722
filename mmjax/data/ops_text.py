"""Text preprocessing ops (op strings: see mmjax.data.ops): checking, tokenizing and padding
captions."""
import numpy as np

from mmjax.data import ops


@ops.register("tokenize")
def get_tokenize(max_len, key="caption", ids_key="text_ids", mask_key="text_mask", *, context):
  """str/bytes (UTF-8) text -> `ids_key` int32[max_len] and `mask_key` bool[max_len] with
  `context["tokenizer_factory"](max_len)` (e.g. a WordPieceTokenizer); drops `key`."""
  max_len = ops.check_int(max_len, "max_len")
  if "tokenizer_factory" not in context:
    raise ValueError("needs context['tokenizer_factory'], a callable max_len -> tokenizer, "
                     "which the caller of build() did not give")
  tokenizer = context["tokenizer_factory"](max_len)
  def _op(data):
    text = data[key]
    if isinstance(text, bytes):  # TFDS text features decode to bytes.
      text = text.decode("utf-8")
    ids, mask = tokenizer.encode([text])
    out = {k: v for k, v in data.items() if k != key}
    return {**out, ids_key: ids[0], mask_key: mask[0]}
  return _op


@ops.register("pad_or_truncate")
def get_pad_or_truncate(length, key="text_ids", pad_value=0):
  """[T] -> [length]: the first `length` items, or all of them followed by `pad_value`s."""
  length = ops.check_int(length, "length")
  def _op(data):
    x = np.asarray(data[key])
    if x.ndim != 1:
      raise ValueError(f"pad_or_truncate expects a 1-D {key!r}, got shape {x.shape}")
    out = np.full((length,), pad_value, x.dtype)
    out[:min(length, len(x))] = x[:length]
    return {**data, key: out}
  return _op


@ops.register("check_text")
def get_check_text(key="caption"):
  """bytes/str -> str; text that is not UTF-8, or empty after stripping, is a BadExample."""
  def _op(data):
    text = data[key]
    if isinstance(text, (bytes, np.bytes_)):
      try:
        text = bytes(text).decode("utf-8")
      except UnicodeDecodeError as e:
        raise ops.BadExample(f"{key!r} is not UTF-8 (byte {text[e.start]:#04x} at position "
                             f"{e.start})") from None
    if not str(text).strip():
      raise ops.BadExample(f"{key!r} is empty")
    return {**data, key: str(text)}
  return _op
