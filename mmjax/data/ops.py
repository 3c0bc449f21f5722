"""Preprocessing ops named in config by a big_vision-style op string.

  "decode|resize(32)|flip_lr|value_range(-1, 1)|tokenize(16, key='caption')"

Ops are separated by `|`; each is a registered name, optionally called with literal Python
arguments. Every op reads (and writes) keys it is told with `key=` and friends, so the same ops
serve images, text and audio. `build` parses the string and constructs every op, so a typo or a
bad argument is a UserError at config-load time, before any data is read. Ops work on
single-example feature dicts of numpy arrays and return a new dict (the input is not modified);
random ops take all their randomness from an np.random.Generator, so a loader that seeds it per
example makes them reproducible. An op raises `BadExample(reason)` for an example that cannot be
used (an image that does not decode, empty text, silent audio); data.on_bad_example decides
whether the loader stops or skips it.

This module is the core (parsing, building, the argument checks ops run when built) and the
general ops: keep, drop, rename, cast, choose. Ops for one modality live in `ops_image`,
`ops_text` and `ops_audio`; each registers its ops when imported, and `parse` and `build` import
every `mmjax.data.ops_*` module the first time they look a name up, so a new
`ops_<modality>.py` is found without a list to update.
"""
import ast
import collections
import importlib
import inspect
import pkgutil
import sys

import numpy as np

from mmjax import registry
from mmjax.errors import UserError


class BadExample(ValueError):
  """An example that cannot be trained on; the message says what is wrong with it."""


# A registered op: `factory(*args, **kwargs)` returns `data -> data`, or `(data, rng) -> data`
# when `random`.
OpDef = collections.namedtuple("OpDef", ["factory", "random"])


def _import_op_modules():
  """Imports each mmjax.data.ops_* module once: they register their ops (they import this
  module for `register`, so it cannot import them at the top without a cycle)."""
  package = sys.modules[__package__]
  for module in pkgutil.iter_modules(package.__path__, prefix=f"{__package__}."):
    if module.name.rpartition(".")[2].startswith("ops_"):
      importlib.import_module(module.name)


# The ops by name (mmjax.registry): {name: OpDef}, the built-in ones registered as their
# modules are imported.
OPS = registry.Registry("op", discover=_import_op_modules)


def register(name, *, random=False):
  """Decorator: registers an op factory under `name` for op strings.

  A factory with a keyword-only `context` parameter gets the `context` dict given to `build`.
  Factories check their arguments and raise ValueError or TypeError for bad ones.
  """
  def _register(factory):
    OPS.register(name, OpDef(factory, random))
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
      raise UserError(f"{at}: {registry.unknown('op', name, OPS.names())}")
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
    factory, random = OPS.get(name)
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


# Argument checks, run when an op is built; each returns the value it checked, normalized.


def check(ok, message):
  if not ok:
    raise ValueError(message)


def check_int(value, name, minimum=1):
  check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def check_size(size):
  """int or (h, w) -> (h, w) of positive ints."""
  if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
    return (check_int(size, "size"),) * 2
  check(isinstance(size, (tuple, list)) and len(size) == 2,
        f"size must be an int or an (height, width) pair, got {size!r}")
  return check_int(size[0], "height"), check_int(size[1], "width")


def check_range(pair, name, low):
  """(a, b) with low < a <= b -> (float a, float b)."""
  check(isinstance(pair, (tuple, list)) and len(pair) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair),
        f"{name} must be a (min, max) pair of numbers, got {pair!r}")
  check(low < pair[0] <= pair[1], f"{name} must have {low} < min <= max, got {pair!r}")
  return float(pair[0]), float(pair[1])


def check_keys(keys, name="keys"):
  check(keys and all(isinstance(k, str) for k in keys),
        f"{name} must be one or more strings, got {keys!r}")
  return keys


# General ops.


@register("keep")
def get_keep(*keys):
  """Drops every key but `keys` (in that order)."""
  keys = check_keys(keys)
  def _op(data):
    return {k: data[k] for k in keys}
  return _op


@register("drop")
def get_drop(*keys):
  """Removes `keys` (each must be present)."""
  keys = check_keys(keys)
  def _op(data):
    missing = [k for k in keys if k not in data]
    if missing:
      raise KeyError(missing[0])
    return {k: v for k, v in data.items() if k not in keys}
  return _op


@register("rename")
def get_rename(**new_from_old):
  """rename(new='old', ...): moves each `old` key to `new` (overwriting a `new` already there)."""
  check_keys(list(new_from_old.values()), "the old key names")
  def _op(data):
    out = {k: v for k, v in data.items() if k not in new_from_old.values()}
    return {**out, **{new: data[old] for new, old in new_from_old.items()}}
  return _op


@register("cast")
def get_cast(dtype, key="label"):
  """Casts `key` to `dtype`, a numpy dtype name such as 'int32' (e.g. TFDS's Python-int labels
  to int32)."""
  try:
    dtype = np.dtype(dtype)
  except TypeError:
    raise ValueError(f"dtype must be a numpy dtype name such as 'int32', got {dtype!r}") from None
  def _op(data):
    return {**data, key: np.asarray(data[key], dtype=dtype)}
  return _op


@register("choose", random=True)
def get_choose(key="captions", out_key="caption"):
  """Sets `out_key` to one item of the list or array `key` (e.g. one of an image's several
  captions), uniformly at random; `key` is kept unless it is `out_key`. An empty `key`
  is a BadExample."""
  def _op(data, rng):
    items = data[key]
    if len(items) == 0:
      raise BadExample(f"{key!r} is empty, there is nothing to choose from")
    return {**data, out_key: items[int(rng.integers(len(items)))]}
  return _op
