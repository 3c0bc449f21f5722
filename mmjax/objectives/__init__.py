"""Training objectives, looked up by name: `get("masked_image")` imports
mmjax.objectives.masked_image and returns its `loss(outputs, cfg, ctx) -> Terms`.

Any module here that defines `loss` is an objective; the others (masked_modeling,
chunked_contrastive) are helpers. `register(name, module)` adds one from elsewhere.

An objective module declares what the trainer must know about it (defaults in brackets):
  MIXES_ROWS     [False] whether its terms compare rows of the batch with each other (a
                 contrastive loss). Gradient accumulation computes such an objective once over
                 the whole batch from the inputs below (GradCache); row-local ones per
                 micro-batch.
  ROW_INPUTS     [()] model outputs it reads with a leading batch axis, differentiated
                 ('embeddings'); SHARED_INPUTS [()] outputs shared by all rows, differentiated
                 (learned scalars); MASK_INPUTS [()] per-row masks it reads, not differentiated.
  embedding_view(cfg)  [None] the embeddings it asks the model for ('clean' | 'masked').
  needs_mesh(cfg)      [False] whether it shard_maps parts of itself over the jit mesh.
  MODALITY       [None] the modality a masked-modeling objective reconstructs.
  check_config(cfg)    its own config checks.

Losses are returned as sums over examples or tokens and their counts, not as means: the trainer
adds them up over devices (pmap), processes and gradient-accumulation micro-batches before it
divides, so every way of splitting a batch gives the same loss as the whole batch at once.
"""
import typing

from jax import lax

from mmjax import registry
from mmjax.errors import UserError
from mmjax.parallel import mesh as mesh_lib


class Terms(typing.NamedTuple):
  """What an objective returns.

  sums: {name: (numerator, denominator)}; the metric is sum(numerators) / sum(denominators)
    over every shard of the global batch. 'loss' is required; the trainer weights it.
  values: {name: scalar} metrics that are the same on every shard (e.g. a learned temperature).
  """
  sums: dict
  values: dict


class Context(typing.NamedTuple):
  """Where an objective runs. axis_name: None under jit on global arrays; the mapped axis (or
  axes) when the objective sees only this device's rows (pmap, shard_map). mesh: the jit mesh,
  for objectives that shard_map parts of themselves; batch_axes: the mesh axes the batch is
  split over on it (config.parallel.rules.batch)."""
  axis_name: typing.Any = None
  mesh: typing.Any = None
  batch_axes: tuple = mesh_lib.STRATEGY_BATCH_AXES

  def total(self, x):
    """Sum over every shard of the batch (identity on global arrays)."""
    return x if self.axis_name is None else lax.psum(x, self.axis_name)


OBJECTIVES = registry.Registry("objective", __name__, "loss", whole_module=True)


def register(name, module):
  """Makes `module` (anything with a `loss` and the declarations above) objective `name`."""
  if not hasattr(module, "loss"):
    raise ValueError(f"objective {name!r}: {module!r} has no loss function.")
  OBJECTIVES.register(name, module)


unregister = OBJECTIVES.unregister


def available():
  """Names of the objectives: the modules in this package that define `loss`, and the
  registered ones."""
  return OBJECTIVES.names()


def active(objectives_cfg):
  """Names of the switched-on objectives (weight > 0), in config order."""
  return [name for name, cfg in objectives_cfg.items() if cfg.weight > 0]


def mixes_rows(name):
  """Whether objective `name`'s terms compare rows of the batch (see the module docstring)."""
  return getattr(_module(name), "MIXES_ROWS", False)


def inputs(name):
  """(row, shared, mask) model outputs that objective `name` reads."""
  module = _module(name)
  return tuple(tuple(getattr(module, k, ())) for k in
               ("ROW_INPUTS", "SHARED_INPUTS", "MASK_INPUTS"))


def embedding_view(objectives_cfg):
  """The embeddings the switched-on objectives ask the model for: 'clean', 'masked' or None.
  Two objectives asking for different views are a UserError."""
  views = {}
  for name in active(objectives_cfg):
    view = getattr(_module(name), "embedding_view", lambda cfg: None)(objectives_cfg[name])
    if view is not None:
      views[name] = view
  if len(set(views.values())) > 1:
    raise UserError(f"config.objectives ask the model for different embedding views: {views}.")
  return next(iter(views.values()), None)


def needs_mesh(objectives_cfg):
  """Whether a switched-on objective shard_maps over the jit mesh (needs Context.mesh)."""
  return any(getattr(_module(n), "needs_mesh", lambda cfg: False)(objectives_cfg[n])
             for n in active(objectives_cfg))


def modality(name):
  """The modality a masked-modeling objective reconstructs (its module's MODALITY), or None."""
  return getattr(_module(name), "MODALITY", None)


def check_config(name, cfg):
  """Runs objective `name`'s own config checks, if its module has any (`check_config(cfg)`)."""
  module = _module(name)  # An unknown name fails here, listing the known ones.
  if hasattr(module, "check_config"):
    module.check_config(cfg)


def get(name):
  """The `loss` function of objective module `name`."""
  return _module(name).loss


def _module(name):
  """The module of objective `name` (a registered one, or one of this package's)."""
  return OBJECTIVES.get(name, key="config.objectives")
