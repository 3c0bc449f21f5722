"""main.py whose asynchronous checkpoint save of one step never finishes (tests only).

  HANG_SAVE_STEP=10 python tests/hang_save_main.py --config=... --workdir=...

The save of step $HANG_SAVE_STEP writes all its data, then its background thread stops short of
finalizing (Orbax's commit), touches WORKDIR/save_hanging and waits forever, while training
goes on. tests/test_resume.py kills the process there, in the middle of the save.
"""
import os
import pathlib
import sys
import threading

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orbax.checkpoint._src.checkpointers import async_checkpointer  # noqa: E402

from absl import app  # noqa: E402

from mmjax import cli  # noqa: E402

_real = async_checkpointer._background_wait_for_commit_futures  # pylint: disable=protected-access


def _hang_before_finalizing(directory, commit_futures, on_commit_callback, **kwargs):
  if pathlib.Path(str(directory)).name != os.environ["HANG_SAVE_STEP"]:
    return _real(directory, commit_futures, on_commit_callback, **kwargs)
  for f in commit_futures:  # The data is written...
    f.result()
  marker = pathlib.Path(str(directory)).parents[1] / "save_hanging"
  marker.touch()
  threading.Event().wait()  # ...but the checkpoint is never finalized.
  return None


async_checkpointer._background_wait_for_commit_futures = _hang_before_finalizing  # pylint: disable=protected-access

if __name__ == "__main__":
  app.run(cli.main, flags_parser=cli.parse_flags)
