"""The modality protocol and registry: one object per modality declares everything the rest of
mmjax asks about it, so the model, the loader, the builder, the planner and the evaluators
iterate over modalities instead of naming them. This module sits below the data and model
packages; the modalities themselves (mmjax/modalities/<name>.py) sit above both.

  image = modality.get("image")
  image.dtypes                      # {'image': uint8}: its host-batch keys
  modality.ordered(info.modalities) # canonical order: image, text, audio, then registered ones

The built-in ones are discovered: each module of mmjax.modalities with a `MODALITY` (imported
by name on first use), in the order of their `order` fields; `register(m)` adds one from
anywhere, e.g. a test or a research fork, without editing mmjax/ (see tests/test_modalities.py,
which adds "depth"). The canonical order is part of the numbers: joint sequences, contrastive
pair names and each modality's masking key follow it.

A modality is an instance of a `Modality` subclass that sets:
  order        its place among the built-in ones (image 0, text 1, audio 2).
  name         its key everywhere: info.modalities, config.model.<name>, the manifest column of
               mmjax.data.build, presence flags has_<name>. An identifier without '_' (pair
               names join two with it: image_text; `register` refuses others).
  dtypes       {host-batch key: numpy dtype}; the first key is what its tokenizer reads.
  feature      the stored feature it is read from (text: 'caption').
  masks_in_place  masked modeling hides its tokens in place (text: BERT) rather than dropping
               them from the encoder's input (MAE).
  pictures     its reconstructions can be drawn (mmjax.evaluate.reconstruction).
and implements the methods below. Its masked-modeling objective is an objective module whose
MODALITY is `name` (mmjax.objectives, e.g. masked_image); its reconstruction target is what
its tokenizer returns as Tokens.target.
"""
import functools
import importlib
import os
import pkgutil

from mmjax import registry
from mmjax.errors import UserError

PACKAGE = "mmjax.modalities"  # Where the built-in modalities are (one module each).

_REGISTERED = {}  # name -> Modality, in registration order.


class Modality:
  """Base class: see the module docstring. A subclass implements every method that raises
  NotImplementedError here; the others have defaults that add nothing."""
  name = ""
  order = 100
  dtypes = {}
  feature = ""
  masks_in_place = False
  pictures = False  # Its reconstructions can be shown as images (tokenizer.unpatchify).

  # -- data -------------------------------------------------------------------------------------

  def check_data_config(self, data_cfg, need):
    """Checks this modality's fields of config.data: `need(ok, key, what)` raises the
    UserError naming data.<key>. Runs for every dataset, before anything is read."""
    del data_cfg, need

  def example_shapes(self, size):
    """{host-batch key: per-example shape} for this modality's `size` (image: (H, W, C);
    text: tokens; audio: samples): how the planner fakes a batch, and what a dataset holds."""
    raise NotImplementedError

  def size(self, info):
    """The inverse of example_shapes: this modality's size in dataset `info`."""
    return info.shapes[next(iter(self.dtypes))]

  def stored_shapes(self, data_cfg, features):
    """{key: shape} before preprocessing, from the stored TFDS `features` and `config.data`
    (the preprocessing then decides: mmjax.data.prepare reads what it makes)."""
    raise NotImplementedError

  def default_pp(self, data_cfg, shapes, *, train):
    """[op string] of the standard recipe (mmjax.data.ops) from the stored feature to the
    batch keys, given the stored `shapes`."""
    raise NotImplementedError

  def describe(self, data_cfg, dataset):
    """DatasetInfo fields this modality adds when a dataset is prepared (text: its vocab),
    after checking what it must (audio: the stored sample rate). `dataset` is a
    mmjax.data.sources.Prepared. Default: nothing."""
    del data_cfg, dataset
    return {}

  def pp_context(self, data_cfg, info):
    """{name: value} its preprocessing ops need from the caller (mmjax.data.ops.build)."""
    del data_cfg, info
    return {}

  info_fields = ()  # The DatasetInfo fields `describe` sets.
  agree = ()  # Those that mixture entries sharing this modality must agree on.

  # -- building a dataset from files (mmjax.data.build) --------------------------------------

  reads_file = True  # The manifest column holds a path (else the value itself, text).

  def build_features(self, opts):
    """{stored key: tfds feature} of a dataset built by mmjax.data.build with `opts`."""
    raise NotImplementedError

  def read(self, value, opts):
    """(stored {key: value}, note or None) for one manifest value (a checked path when
    reads_file); mmjax.data.ops.BadExample says why it cannot be used."""
    raise NotImplementedError

  # -- model ------------------------------------------------------------------------------------

  def model_config(self):
    """Its section of config.model (a ConfigDict), or None."""
    return None

  def check_model_config(self, cfg):
    """Raises UserError naming the key for a bad config.model.<name> (`cfg`)."""
    del cfg

  def token_grid(self, model_cfg, info):
    """The static token grid its tokenizer makes for dataset `info` under config.model:
    known before anything is built. UserError, naming the key, when its inputs cannot be
    tokenized (a patch size that does not divide them)."""
    raise NotImplementedError

  def out_dim(self, model_cfg, info):
    """Features the decoder predicts per token (patch values, or the vocab for text): its
    tokenizer's out_dim, known without building it."""
    raise NotImplementedError

  def tokenizer(self, model_cfg, info, width, *, dtype, rngs):
    """An nnx.Module: batch -> mmjax.models.tokenizers.Tokens, with `input_key` (the batch key
    that says the modality is in a batch), `out_dim` and `out_axis` (the decoder head's output
    size and its partitioning axis: 'patch' or 'vocab')."""
    raise NotImplementedError


def register(modality):
  """Adds `modality` (a Modality instance) to the registry, after the built-in ones (under a
  built-in name, it replaces that one and keeps its place). Its name may not contain '_':
  pair names join two modality names with it ('image_text': the model's logit_scale and
  logit_bias parameters, contrastive metrics, checkpoints), so 'a_b' with 'c' and 'a' with
  'b_c' would both be 'a_b_c', one parameter for two pairs, and the contrastive loss could
  not tell which modalities a pair name joins."""
  if not isinstance(modality, Modality) or not modality.name.isidentifier():
    raise ValueError(f"{modality!r} is not a Modality with an identifier as its name.")
  if "_" in modality.name:
    raise UserError(f"Modality name {modality.name!r} contains '_', which joins the two "
                    "modalities of a contrastive pair's name (image_text); name it without "
                    f"'_', e.g. {modality.name.replace('_', '')!r}.")
  _REGISTERED[modality.name] = modality
  return modality


def unregister(name):
  """Removes a registered modality (built-in ones come back on the next lookup)."""
  _REGISTERED.pop(name, None)


@functools.cache
def builtin():
  """Names of the built-in modalities (the modules of mmjax.modalities with a MODALITY), in
  canonical order: by their `order`."""
  package = importlib.import_module(PACKAGE)
  found = [importlib.import_module(f"{PACKAGE}.{info.name}")
           for info in pkgutil.iter_modules(package.__path__)]
  found = [m.MODALITY for m in found if hasattr(m, "MODALITY")]
  return tuple(m.name for m in sorted(found, key=lambda m: (m.order, m.name)))


def names():
  """Every known modality, in canonical order: the built-in ones, then registered ones."""
  return builtin() + tuple(n for n in _REGISTERED if n not in builtin())


def get(name):
  """The Modality called `name`; UserError listing the known ones for another name."""
  modality = _REGISTERED.get(name)
  if modality is None and name in builtin():
    modality = importlib.import_module(f"{PACKAGE}.{name}").MODALITY
    _REGISTERED[name] = modality
  if modality is None:
    raise UserError(registry.unknown("modality", name, names(), how="add one with "
                                     "mmjax.modality.register"))
  return modality


def ordered(modalities):
  """`modalities` in canonical order (UserError for an unknown one)."""
  for m in modalities:
    get(m)
  return tuple(m for m in names() if m in modalities)


def batch_keys(modalities):
  """The host-batch keys of `modalities`, in canonical order."""
  return [k for m in ordered(modalities) for k in get(m).dtypes]


def of_key(batch_key):
  """The modality whose host-batch key `batch_key` is, or None."""
  return next((m for m in names() if batch_key in get(m).dtypes), None)


def extension_note(kind, path, known, read_as):
  """A note for a file kept although its extension is not one of `known`, else None."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in known:
    return (f"{kind} {os.path.basename(path)!r}: unknown extension {ext or '(none)'!r}, read "
            f"as {read_as}")
  return None


def presence_key(modality):
  """The host-batch key of bool[B] 'this example has `modality`'. Batches from a mixture whose
  entries lack a modality carry it (zeros stand in for what is missing); without the key, every
  example has every modality in the batch."""
  return f"has_{modality}"

