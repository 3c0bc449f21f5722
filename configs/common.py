"""Pieces shared by the config files: string-argument parsing and common defaults."""
import os

import ml_collections

from mmjax.errors import UserError


# What a boolean config argument accepts (case-insensitive); anything else is an error, so
# `runlocal=on` cannot quietly mean False and start the full run.
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_arg(arg, **defaults):
  """Parses `configs/x.py:arg` strings such as "runlocal,size=S,fusion=joint".

  A bare word sets a boolean default to True; `k=v` sets k, converted to the type of its default
  (booleans take true/false, 1/0, yes/no, on/off). Unknown names, values that do not convert
  and malformed parts (`=S`, `size=`) are errors, so a typo in the argument fails as loudly as
  a typo in a key.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    name, eq, value = (s.strip() for s in part.partition("="))
    if not name:
      raise UserError(f"Config argument {part!r} has no name: use name=value, comma separated.")
    if name not in defaults:
      raise UserError(
          f"Unknown config argument {name!r}; this config takes {sorted(defaults)}.")
    default = defaults[name]
    if not eq:
      if not isinstance(default, bool):
        raise UserError(f"Config argument {name!r} needs a value: {name}=...")
      parsed[name] = True
    elif not value:
      raise UserError(f"Config argument {part!r} has no value: {name}=...")
    elif isinstance(default, bool):
      if value.lower() not in _TRUE + _FALSE:
        raise UserError(f"Config argument {name}={value!r} is not a boolean: use one of "
                        f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)} (or the bare word {name!r}).")
      parsed[name] = value.lower() in _TRUE
    else:
      try:
        parsed[name] = type(default)(value)
      except ValueError:
        raise UserError(f"Config argument {name}={value!r} is not a valid "
                        f"{type(default).__name__}, e.g. {name}={default}.") from None
  return parsed


def default_data_dir():
  """Where built datasets live unless `--config.data.dir` says otherwise."""
  return os.environ.get("MMJAX_DATA_DIR", os.path.expanduser("~/mmjax_data"))


# Mesh shapes of the named sharding strategies (mmjax/parallel/sharding.py); -1 takes the rest
# of the devices. Override any size with --config.mesh.<axis>=N.
STRATEGY_MESHES = {
    "data_parallel": {"data": -1, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
    "fsdp_tensor": {"data": 1, "fsdp": -1, "tensor": 2},
}


def parallel_config(strategy="data_parallel"):
  """(config.mesh, config.parallel) for a named sharding strategy: the overlay every
  training config applies (`strategy=` in its argument)."""
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  if strategy not in STRATEGY_MESHES:
    raise UserError(f"Unknown strategy {strategy!r}: use one of {list(STRATEGY_MESHES)}.")
  mesh = ml_collections.ConfigDict(STRATEGY_MESHES[strategy])
  parallel = ml_collections.ConfigDict(dict(
      loop="jit",  # 'jit' (any mesh) or 'pmap' (data parallel, replicated parameters).
      grad_accum_steps=1,  # Micro-batches per step (exact for contrastive losses: GradCache).
      rules=sharding.strategy_rules(strategy),  # Logical axis -> mesh axes.
  ))
  return mesh, parallel


# The six retrieval directions between image, text and audio, as the retrieval evaluator names
# them; the sweep files' metrics use them.
RETRIEVAL_DIRECTIONS = ("image_to_text", "text_to_image", "audio_to_text", "text_to_audio",
                        "image_to_audio", "audio_to_image")


def retrieval_r(k, stage="pretrain"):
  """Sweep metric names of R@k in every direction, from `stage`'s metrics."""
  return tuple(f"{stage}/eval/retrieval/{d}/r@{k}" for d in RETRIEVAL_DIRECTIONS)


# -- The ablations' benchmark (configs/ablations/): mmjax_scenes at the ablation scale. -------
ABLATION_BASE = "configs/pretrain_scenes.py:ablation"
# Every ablation table's baselines, measured by each downstream stage's own protocol: the same
# encoder at random initialization (no init_from), and a linear classifier on the raw input.
BASELINES = {"random_init": {}, "raw_input": {"model.name": "raw"}}
ABLATION_SEEDS = (0, 1, 2)


def downstream(attribute="shape", task="image", mode="probe", labels=0):
  """A sweep's downstream stage: configs/finetune_scenes.py with these arguments."""
  from mmjax.sweep import Downstream  # pylint: disable=g-import-not-at-top
  return Downstream(f"configs/finetune_scenes.py:attribute={attribute},task={task},mode={mode},"
                    f"labels={labels}")


def shape_transfer():
  """The downstream stages of the image sweeps (mae_mask_ratio, text_mask_ratio, objectives):
  a linear probe of the main object's shape and a full fine-tune of it with 10 labelled scenes
  per shape. The same stages under the same names give their baselines the same configs, so
  the runner runs each baseline once and the other sweeps take it from the first's report."""
  return {"probe": downstream("shape"), "finetune10": downstream("shape", mode="full", labels=10)}
