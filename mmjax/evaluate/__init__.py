"""Evaluators, looked up by name: `config.evals.<name>.type = "retrieval"` imports
`mmjax.evaluate.retrieval`. Each such module exposes `Evaluator(cfg, *, config, info, mesh)` with
`run(model, step, writer) -> dict[str, float]` returning metrics named `eval/<name>/...`.
An evaluator that cannot run on the dataset (zero-shot without class names, reconstruction
without images) raises `NotApplicable` from its constructor."""
import importlib

import jax
from absl import logging

from mmjax.errors import NotApplicable
from mmjax.errors import UserError

# Modules here that are not evaluators: the published protocols' metrics, used by evaluators.
HELPERS = ("protocols",)


def get(name, cfg, **kwargs):
  try:
    module = importlib.import_module(f"mmjax.evaluate.{cfg.type}")
  except ModuleNotFoundError as e:
    if e.name != f"mmjax.evaluate.{cfg.type}":
      raise
    raise UserError(f"config.evals.{name}.type={cfg.type!r}: no module mmjax/evaluate/"
                    f"{cfg.type}.py.") from None
  return module.Evaluator(cfg, name=name, **kwargs)


def build(config, info, mesh, *, requested=()):
  """{name: evaluator} of config.evals. One that is NotApplicable to the dataset is switched
  off with a one-line notice, unless its name is in `requested` (asked for explicitly): then
  its message is the error."""
  evaluators = {}
  for name, cfg in config.evals.items():
    try:
      evaluators[name] = get(name, cfg, config=config, info=info, mesh=mesh)
    except NotApplicable as e:
      if name in requested:
        raise
      logging.info("Switched off config.evals.%s: %s", name, e)
      if jax.process_index() == 0:
        print(f"note: switched off (cannot run on this dataset): {e}")
  return evaluators
