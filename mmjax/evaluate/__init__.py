"""Evaluators, looked up by name: `config.evals.<name>.type = "retrieval"` imports
`mmjax.evaluate.retrieval`. Each such module exposes `Evaluator(cfg, *, config, info, mesh)` with
`run(model, step, writer) -> dict[str, float]` returning metrics named `eval/<name>/...`."""
import importlib

from mmjax.errors import UserError


def get(name, cfg, **kwargs):
  try:
    module = importlib.import_module(f"mmjax.evaluate.{cfg.type}")
  except ModuleNotFoundError as e:
    if e.name != f"mmjax.evaluate.{cfg.type}":
      raise
    raise UserError(f"config.evals.{name}.type={cfg.type!r}: no module mmjax/evaluate/"
                    f"{cfg.type}.py.") from None
  return module.Evaluator(cfg, name=name, **kwargs)
