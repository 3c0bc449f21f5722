"""Paths and files: path flags and config fields as a shell would have expanded them, and files
written whole or not at all."""
import contextlib
import os
import re

from mmjax.errors import UserError


def expand_path(path, what):
  """`path` with '~' and $VARIABLES expanded (empty stays empty). An unset variable is an
  error naming it (`what`: the flag or key): left as it is, it would become a folder named
  '$SCRATCH'. The shell does not expand `--workdir=~/x`, so every path flag goes through here."""
  if not path:
    return path
  # A format prefix ('hf:~/models/minilm', config.init_from) stays in front of the path.
  prefix = re.match(r"[a-z][a-z0-9_]*:(?!//)", str(path))
  if prefix:
    return prefix.group(0) + expand_path(str(path)[prefix.end():], what)
  expanded = os.path.expanduser(os.path.expandvars(str(path)))
  unset = re.search(r"\$\{?(\w+)", expanded)
  if unset:
    raise UserError(f"{what}={path!r}: the environment variable ${unset.group(1)} is not set.")
  return expanded


@contextlib.contextmanager
def atomic_open(path):
  """A text file to write in place of `path`: renamed over it when the block ends (a reader,
  or a process killed meanwhile, sees the whole file or the old one), removed if the block
  fails (a full disk half way leaves nothing behind)."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
