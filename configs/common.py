"""Pieces shared by the config files: string-argument parsing and common defaults."""
import os

import ml_collections

from mmjax.errors import UserError


def parse_arg(arg, **defaults):
  """Parses `configs/x.py:arg` strings such as "runlocal,size=S,fusion=joint".

  A bare word sets a boolean default to True; `k=v` sets k, converted to the type of its default.
  Unknown names are an error, so a typo in the argument fails as loudly as a typo in a key.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    name, eq, value = part.partition("=")
    if name not in defaults:
      raise UserError(
          f"Unknown config argument {name!r}; this config takes {sorted(defaults)}.")
    default = defaults[name]
    if not eq:
      if not isinstance(default, bool):
        raise UserError(f"Config argument {name!r} needs a value: {name}=...")
      parsed[name] = True
    elif isinstance(default, bool):
      parsed[name] = value.lower() in ("1", "true", "yes")
    else:
      parsed[name] = type(default)(value)
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


def retrieval_r1(stage="pretrain"):
  """Sweep metric names of R@1 in every direction, from `stage`'s metrics."""
  return tuple(f"{stage}/eval/retrieval/{d}/r@1" for d in RETRIEVAL_DIRECTIONS)
