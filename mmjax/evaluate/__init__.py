"""Evaluators, looked up by name (mmjax.registry): `config.evals.<name>.type = "retrieval"` is
`mmjax.evaluate.retrieval`'s `Evaluator`, or one added with `register(name, cls)`. An evaluator
is a class `Evaluator(cfg, *, name, config, info, mesh)` with `run(model, step, writer) ->
dict[str, float]` returning metrics named `eval/<name>/...`. One that cannot run on the dataset
(zero-shot without class names, reconstruction without images) raises `NotApplicable` from
its constructor. (Modules here without an `Evaluator`, e.g. protocols, are helpers.)"""
import jax
from absl import logging

from mmjax import registry
from mmjax.errors import NotApplicable

EVALUATORS = registry.Registry("evaluator", __name__, "Evaluator")
register, unregister, names = EVALUATORS.register, EVALUATORS.unregister, EVALUATORS.names


def get(name, cfg, **kwargs):
  """Evaluator config.evals.<name> (of type cfg.type), built."""
  return EVALUATORS.get(cfg.type, key=f"config.evals.{name}.type")(cfg, name=name, **kwargs)


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
