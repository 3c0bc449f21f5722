"""A sweep file's contents (`Sweep`, `Downstream`, `Claim`, `product`, point names), loading
sweep files and configs, and checking a sweep before anything runs."""
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import statistics

from mmjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = "pretrain"
LABEL = "name"  # A point's label, not a config override.
BASELINE = "baseline:"  # A baseline's point name is BASELINE + its name in Sweep.baselines.
# Config keys that say where a file is, not what runs (mmjax.train.validate.PATH_KEYS, not
# imported: it loads JAX): left out of a task's config hash, so a result adopted on another
# machine, with its data elsewhere, still matches.
LOCATION_KEYS = ("data.dir", "data.vocab_file", "init_from")


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
  adds a column: {name: [metrics]}.

  `baselines` ({name: overrides}) are run per seed with no pretraining: the downstream stages
  alone, from random init, each with the baseline's overrides (e.g. {"model.name": "raw"}); their
  point name is 'baseline:<name>' and they measure only the downstream metrics. `claims` are the
  paper's results as comparisons of points (`Claim`), judged from the seeds by
  mmjax.sweep.claims; a claim on a metric bounded by 1 (an accuracy, an R@k) whose points reach
  `ceiling` is untestable."""
  base: str
  points: list
  metrics: tuple
  x: str
  seeds: tuple = (0, 1)
  overrides: dict = dataclasses.field(default_factory=dict)  # Every point's pretraining.
  downstream: dict = dataclasses.field(default_factory=dict)
  series: str = ""
  mean_of: dict = dataclasses.field(default_factory=dict)
  baselines: dict = dataclasses.field(default_factory=dict)
  claims: tuple = ()
  ceiling: float = 0.98


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's result as a comparison on one `metric` (a metric of the sweep, or a mean_of
  column): seed by seed, the mean over the `greater` points minus the mean over the `than`
  points is above 0. Each is a point name (`point_name`, or 'baseline:<name>') or a tuple of
  them: greater=("s16", "i128"), than=("i16", "s128") tests the interaction
  (s16 + i128) - (i16 + s128). `paper` gives the paper's own numbers, e.g.
  'Fig. 5: 73.5 vs 66.0'."""
  text: str
  metric: str
  greater: object  # str or tuple of str
  than: object
  paper: str = ""

  @property
  def sides(self):
    """(greater point names, than point names), each a tuple."""
    return tuple((s,) if isinstance(s, str) else tuple(s) for s in (self.greater, self.than))


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


def folder_name(name):
  """A point name as a folder name ('baseline:random_init' -> 'baseline_random_init')."""
  return re.sub(r"[^\w.=,+-]", "_", name)


def entries(sweep):
  """[(point name, overrides, baseline name or '')]: the points, then the baselines."""
  return ([(point_name(p), p, "") for p in sweep.points]
          + [(BASELINE + b, o, b) for b, o in sweep.baselines.items()])


def columns(sweep):
  """The columns of a sweep's table: its metrics, then its mean_of columns."""
  return list(sweep.metrics) + list(sweep.mean_of)


def record_values(sweep, record):
  """{column: value} of one result record, for the columns whose metrics it has (a baseline's
  record has no pretraining metrics)."""
  metrics = record["metrics"]
  out = {m: metrics[m] for m in sweep.metrics if metrics.get(m) is not None}
  for name, parts in sweep.mean_of.items():
    if all(metrics.get(m) is not None for m in parts):
      out[name] = statistics.mean(metrics[m] for m in parts)
  return out


def measured_by_baselines(sweep, column):
  """Whether the baselines (downstream stages alone) measure a column: all its metrics come
  from downstream stages."""
  parts = sweep.mean_of.get(column, [column])
  return all(m.partition("/")[0] != PRETRAIN for m in parts)


# Config keys added after results were reported, with the value that does what the code did
# before the key existed: left out of config_hash while they hold it, so that adding a switch
# does not orphan every recorded result (model switches of mmjax.interop).
ADDED_DEFAULTS = {"model.block": "pre_ln", "model.ln_eps": 1e-6, "model.gelu": "tanh",
                  "model.encoder": {"width": 0, "depth": 0, "num_heads": 0, "mlp_dim": 0},
                  "model.towers": "shared", "model.cls_token": (), "model.pool": "mean",
                  "model.causal": (), "model.proj_norm": True,
                  "model.ln_pre_off": (), "model.image.pos_embed": "sincos",
                  "model.image.decoder_pos_embed": "sincos",
                  "model.decoder": {"width": 0, "depth": 0, "num_heads": 0, "mlp_dim": 0},
                  # Every modality's tower shape at 0 (one entry per registered modality).
                  "model.tower": lambda tower: all(
                      not any(v.values()) for v in tower.values() if isinstance(v, dict))}


def _pop(tree, key, only_if=None):
  """Removes dotted `key` from a nested dict (when its value equals `only_if`, or passes it
  when it is a function, if given)."""
  *parents, leaf = key.split(".")
  node = tree
  for part in parents:
    node = node.get(part, {}) if isinstance(node, dict) else {}
  if isinstance(node, dict) and leaf in node and (
      only_if is None or (only_if(node[leaf]) if callable(only_if) else node[leaf] == only_if)):
    node.pop(leaf)


def config_hash(configs):
  """A short sha256 of a task's resolved stage configs ({stage: ConfigDict}), without the keys
  that only locate files (LOCATION_KEYS) and ADDED_DEFAULTS at their defaults: what a reported
  result is keyed by."""
  resolved = {}
  for stage, config in configs.items():
    tree = config.to_dict()
    for key in LOCATION_KEYS:
      _pop(tree, key)
    for key, default in ADDED_DEFAULTS.items():
      _pop(tree, key, only_if=default)
    resolved[stage] = tree
  text = json.dumps(resolved, sort_keys=True, default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
  """The Sweep of 'file.py' or 'file.py:arg' (its get_sweep(arg), e.g. ':pod' for the scale)."""
  path, colon, arg = path.partition(":")
  module = _module(path, "_sweep_file")
  if not hasattr(module, "get_sweep"):
    raise UserError(f"{path}: a sweep file defines get_sweep() returning mmjax.sweep.Sweep.")
  return module.get_sweep(arg) if colon else module.get_sweep()


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


def stage_configs(sweep, overrides, seed, extra=None, baseline=False):
  """{stage: (config spec, {key: value} overrides)} of one point x seed; of a baseline (its
  overrides applied to every downstream stage, no pretraining) with `baseline`."""
  common = dict(extra or {})
  overrides = {k: v for k, v in overrides.items() if k != LABEL}
  stages = {}
  if not baseline:
    stages[PRETRAIN] = (sweep.base, {**sweep.overrides, **overrides, "seed": seed, **common})
  for name, down in sweep.downstream.items():
    stages[name] = (down.config, {**down.overrides, **(overrides if baseline else {}),
                                  "seed": seed, **common})
  return stages


def check(sweep, where, runlocal=False, extra=None):
  """Raises UserError naming the problem for a sweep that cannot run: no points or seeds, an
  override key its config lacks, a point or baseline whose config fails the config checks, a
  metric of an unknown stage or of an evaluator that stage does not run, a claim naming an
  unknown point or metric. Returns {stage: config} (of the last point)."""
  from mmjax.train import validate  # pylint: disable=g-import-not-at-top
  if not sweep.points:
    raise UserError(f"{where}: the sweep has no points.")
  if not sweep.seeds:
    raise UserError(f"{where}: the sweep has no seeds.")
  if not sweep.metrics:
    raise UserError(f"{where}: the sweep names no metrics for its table.")
  if sweep.baselines and not sweep.downstream:
    raise UserError(f"{where}: baselines run the downstream stages alone, and the sweep has "
                    "none.")
  keys = set().union(*sweep.points)
  names = [name for name, *_ in entries(sweep)]
  folders = [folder_name(n) for n in names]
  if len(set(folders)) < len(folders):
    raise UserError(f"{where}: two points share a name (or a folder name): {names}.")
  configs = {}
  for name, overrides, baseline in entries(sweep):
    what = f"baseline {baseline}" if baseline else f"point {name}"
    for stage, (spec, stage_overrides) in stage_configs(
        sweep, overrides, sweep.seeds[0], extra, bool(baseline)).items():
      config = stage_config(spec, stage_overrides, runlocal, f"{where}, {what}, stage {stage}")
      try:
        validate.check_config(config)
      except UserError as e:
        raise UserError(f"{where}, {what}, stage {stage}: {e}") from None
      if not baseline:
        configs[stage] = config
  if sweep.x not in keys:
    raise UserError(f"{where}: x={sweep.x!r} is not an override of any point {sorted(keys)}.")
  if sweep.series and sweep.series not in keys:
    raise UserError(f"{where}: series={sweep.series!r} is not an override of any point.")
  for metric in (*sweep.metrics, *itertools.chain(*sweep.mean_of.values())):
    _check_metric(metric, configs, where)
  for claim in sweep.claims:
    _check_claim(sweep, claim, names, where)
  return configs


def _check_metric(metric, configs, where):
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


def _check_claim(sweep, claim, names, where):
  if not isinstance(claim, Claim):
    raise UserError(f"{where}: claims are mmjax.sweep.Claim, not {claim!r}.")
  what = f"{where}: claim {claim.text!r}"
  if claim.metric not in columns(sweep):
    raise UserError(f"{what}: metric {claim.metric!r} is not a column of the sweep "
                    f"(metrics and mean_of: {columns(sweep)}).")
  greater, than = claim.sides
  if not greater or not than:
    raise UserError(f"{what}: it needs points on both sides (greater= and than=).")
  if set(greater) == set(than):
    raise UserError(f"{what}: greater= and than= name the same points.")
  for name in greater + than:
    if name not in names:
      raise UserError(f"{what}: no point {name!r} (points: {names}).")
    if name.startswith(BASELINE) and not measured_by_baselines(sweep, claim.metric):
      raise UserError(f"{what}: {name} does not measure {claim.metric!r} (a baseline runs "
                      "only the downstream stages).")
