"""Where results come from: the commit of the checkout this code runs from (recorded in each
launch's config history and in each sweep result) and whether the checkout had changes that
commit does not hold (in each sweep result)."""
import os
import subprocess

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit():
  """HEAD of this checkout (10 hex digits), or 'unknown' outside a git checkout."""
  try:
    return subprocess.check_output(["git", "rev-parse", "--short=10", "HEAD"], cwd=_REPO,
                                   text=True, stderr=subprocess.DEVNULL).strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def dirty(ignore=()):
  """Whether this checkout has changes HEAD does not hold (`git status --porcelain`: modified,
  staged or untracked files), leaving out the paths that start with one of `ignore`; None
  outside a git checkout."""
  try:
    out = subprocess.check_output(["git", "status", "--porcelain", "-z"], cwd=_REPO, text=True,
                                  stderr=subprocess.DEVNULL)
  except (OSError, subprocess.CalledProcessError):
    return None
  # -z: 'XY path' entries separated by NUL; a rename's entry is followed by its old path.
  entries = out.split("\0")
  paths, i = [], 0
  while i < len(entries):
    entry = entries[i]
    if len(entry) > 3:
      paths.append(entry[3:])
      if entry[0] in "RC":
        i += 1  # The old path of a rename or copy.
    i += 1
  return any(not p.startswith(tuple(ignore)) for p in paths)
