"""A sweep file's contents (`Sweep`, `Downstream`, `product`, point names), loading sweep files
and configs, and checking a sweep before anything runs."""
import dataclasses
import importlib.util
import itertools
import os

from mmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = "pretrain"
LABEL = "name"  # A point's label, not a config override.


@dataclasses.dataclass(frozen=True)
class Downstream:
  """A stage run after pretraining: `config` ('path.py:arg'), with init_from set to the
  point's pretraining workdir, plus `overrides` and the point's seed."""
  config: str
  overrides: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """An ablation. Metrics are '<stage>/<metric key in that stage's metrics.jsonl>', e.g.
  'pretrain/eval/retrieval/text_to_image/r@1' or 'probe/eval/classification/accuracy'; the
  value is the one the stage logged at its final step (its total_steps). A point is a dict of
  overrides, plus optionally LABEL ('name'): its name in tables and folders, not an override.
  `x` is the override (or LABEL) plotted on the x axis; `series`, if set, the override whose
  values are separate lines. `overrides` apply to every point's pretraining first. `mean_of`
  adds a column: {name: [metrics]}."""
  base: str
  points: list
  metrics: tuple
  x: str
  seeds: tuple = (0, 1)
  overrides: dict = dataclasses.field(default_factory=dict)  # Every point's pretraining.
  downstream: dict = dataclasses.field(default_factory=dict)
  series: str = ""
  mean_of: dict = dataclasses.field(default_factory=dict)


def product(**values):
  """Points of every combination: product(a=(1, 2), b=(3,)) with keys given as a__b for a.b."""
  keys = [k.replace("__", ".") for k in values]
  return [dict(zip(keys, combo)) for combo in itertools.product(*values.values())]


def point_name(point):
  """A folder name for a point: its LABEL, or 'key=value,...' with each key's last two parts."""
  if LABEL in point:
    return str(point[LABEL])
  if not point:
    return "base"
  overrides = point
  return ",".join(f"{'.'.join(k.split('.')[-2:])}={v}" for k, v in overrides.items())


# -- Loading and checking. ---------------------------------------------------------------------

def _module(path, name):
  if not os.path.isfile(path):
    raise UserError(f"{path}: no such file.")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec, runlocal=False):
  """get_config(arg) of 'configs/x.py:arg' (paths relative to the repository), with
  'runlocal' added to the argument when asked."""
  path, _, arg = spec.partition(":")
  if runlocal:
    arg = ",".join(filter(None, [arg, "runlocal"]))
  module = _module(path if os.path.isabs(path) else os.path.join(REPO, path), "_sweep_config")
  return module.get_config(arg or None)


def load_sweep(path):
  module = _module(path, "_sweep_file")
  if not hasattr(module, "get_sweep"):
    raise UserError(f"{path}: a sweep file defines get_sweep() returning mmjax.sweep.Sweep.")
  return module.get_sweep()


def _set(config, key, value, where):
  node, parts = config, key.split(".")
  for part in parts[:-1]:
    if not hasattr(node, "keys") or part not in node:
      raise UserError(f"{where}: override {key!r}: the config has no key {part!r} there.")
    node = node[part]
  if not hasattr(node, "keys") or parts[-1] not in node:
    raise UserError(f"{where}: override {key!r}: the config has no key {parts[-1]!r}.")
  try:
    node[parts[-1]] = value
  except TypeError as e:  # ml_collections keeps each field's type.
    raise UserError(f"{where}: override {key}={value!r}: {e}") from None


def stage_config(spec, overrides, runlocal=False, where=""):
  """The config a stage's main.py command trains with: `spec`'s, with `overrides` set."""
  config = load_config(spec, runlocal)
  for key, value in overrides.items():
    _set(config, key, value, where)
  return config


def stage_configs(sweep, overrides, seed, extra=None):
  """{stage: (config spec, {key: value} overrides)} of one point x seed."""
  common = dict(extra or {})
  overrides = {k: v for k, v in overrides.items() if k != LABEL}
  stages = {PRETRAIN: (sweep.base, {**sweep.overrides, **overrides, "seed": seed, **common})}
  for name, down in sweep.downstream.items():
    stages[name] = (down.config, {**down.overrides, "seed": seed, **common})
  return stages


def check(sweep, where, runlocal=False, extra=None):
  """Raises UserError naming the problem for a sweep that cannot run: no points or seeds, an
  override key its config lacks, a point whose config fails the config checks, a metric of an
  unknown stage or of an evaluator that stage does not run."""
  from mmjax.train import validate  # pylint: disable=g-import-not-at-top
  if not sweep.points:
    raise UserError(f"{where}: the sweep has no points.")
  if not sweep.seeds:
    raise UserError(f"{where}: the sweep has no seeds.")
  if not sweep.metrics:
    raise UserError(f"{where}: the sweep names no metrics for its table.")
  keys = set().union(*sweep.points)
  names = [point_name(p) for p in sweep.points]
  if len(set(names)) < len(names):
    raise UserError(f"{where}: two points share a name: {names}.")
  configs = {}
  for overrides in sweep.points:
    for stage, (spec, stage_overrides) in stage_configs(
        sweep, overrides, sweep.seeds[0], extra).items():
      config = stage_config(spec, stage_overrides, runlocal,
                            f"{where}, point {point_name(overrides)}, stage {stage}")
      try:
        validate.check_config(config)
      except UserError as e:
        raise UserError(f"{where}, point {point_name(overrides)}, stage {stage}: {e}") from None
      configs[stage] = config
  if sweep.x not in keys:
    raise UserError(f"{where}: x={sweep.x!r} is not an override of any point {sorted(keys)}.")
  if sweep.series and sweep.series not in keys:
    raise UserError(f"{where}: series={sweep.series!r} is not an override of any point.")
  for metric in (*sweep.metrics, *itertools.chain(*sweep.mean_of.values())):
    stage, _, key = metric.partition("/")
    if stage not in configs:
      raise UserError(f"{where}: metric {metric!r}: no stage {stage!r} (stages: "
                      f"{list(configs)}).")
    parts = key.split("/")
    if parts[0] == "eval" and (len(parts) < 3 or parts[1] not in configs[stage].evals):
      raise UserError(f"{where}: metric {metric!r}: stage {stage!r} runs no evaluator "
                      f"{parts[1] if len(parts) > 1 else ''!r} (its evals: "
                      f"{list(configs[stage].evals)}).")
    if parts[0] == "train" and len(parts) > 2 and parts[1] == "loss" and (
        parts[2] not in configs[stage].objectives):
      raise UserError(f"{where}: metric {metric!r}: stage {stage!r} has no objective "
                      f"{parts[2]!r}.")
  return configs
