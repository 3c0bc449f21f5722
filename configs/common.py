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
