"""Path flags and config fields as a shell would have expanded them."""
import os
import re

from mmjax.errors import UserError


def expand_path(path, what):
  """`path` with '~' and $VARIABLES expanded (empty stays empty). An unset variable is an
  error naming it (`what`: the flag or key): left as it is, it would become a folder named
  '$SCRATCH'. The shell does not expand `--workdir=~/x`, so every path flag goes through here."""
  if not path:
    return path
  expanded = os.path.expanduser(os.path.expandvars(str(path)))
  unset = re.search(r"\$\{?(\w+)", expanded)
  if unset:
    raise UserError(f"{what}={path!r}: the environment variable ${unset.group(1)} is not set.")
  return expanded
