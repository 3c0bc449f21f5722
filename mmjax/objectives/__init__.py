"""Training objectives, looked up by name: `get("masked_image")` imports
mmjax.objectives.masked_image and returns its `loss(outputs, cfg) -> (loss, metrics)`.

Any module here that defines `loss` is an objective; the others (masking, masked_modeling) are
helpers.
"""
import importlib
import pkgutil

from mmjax.errors import UserError


def available():
  """Names of the objective modules in this package."""
  names = []
  for info in pkgutil.iter_modules(__path__):
    if hasattr(importlib.import_module(f"{__name__}.{info.name}"), "loss"):
      names.append(info.name)
  return sorted(names)


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
  module = None
  if name.isidentifier():
    try:
      module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{name}":
        raise  # A real import error inside the module: keep its traceback.
  if module is None or not hasattr(module, "loss"):
    raise UserError(f"Unknown objective {name!r} (config.objectives.{name}); available: "
                    f"{available()}.")
  return module
