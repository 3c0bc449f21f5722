"""Where results come from: the commit of the checkout this code runs from (recorded in each
launch's config history and in each sweep result)."""
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
