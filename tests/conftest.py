"""Shared test set-up: a fake 8-device CPU pod and one small built-in dataset for all tests."""
import os

# Must happen before JAX initialises its backends: every test sees 8 CPU devices.
# (pytest-xdist workers inherit the variable already set: set the count once.)
# Tests are compile-bound (tiny models, few steps), and compiling XLA's CPU code costs less with
# LLVM at -O0 (about a quarter), with the element-wise emitter instead of the newer fusion
# emitters (about a third of a train step's compile) and in one LLVM module rather than split
# for threads that two busy cores do not have. The same math: the runlocal demo's losses and
# metrics are bit for bit those of the default flags. Subprocesses inherit the flags.
_TEST_XLA_FLAGS = {"--xla_force_host_platform_device_count": "8",
                   "--xla_backend_optimization_level": "0",
                   "--xla_cpu_use_fusion_emitters": "false",
                   "--xla_cpu_parallel_codegen_split_count": "1"}
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if f.split("=")[0] not in _TEST_XLA_FLAGS]
    + [f"{name}={value}" for name, value in _TEST_XLA_FLAGS.items()])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import collections  # noqa: E402
import pathlib  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

# JAX's persistent compilation cache (.cache/ is git-ignored): many tests and the subprocesses
# they start (which inherit these variables) compile the same tiny train step; after the first,
# each is a cache hit. Cached executables are the same code, so bit-for-bit tests still hold.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
  """A data directory reused across test runs (.cache/ is git-ignored), so the small dataset
  is synthesized once per machine rather than once per run."""
  path = REPO / ".cache" / "test_data"
  path.mkdir(parents=True, exist_ok=True)
  # Built here, once, behind a file lock: pytest-xdist workers must not build it at once.
  import filelock  # pylint: disable=g-import-not-at-top
  from configs import pretrain_digits  # pylint: disable=g-import-not-at-top
  from mmjax.data import loader  # pylint: disable=g-import-not-at-top
  with filelock.FileLock(str(path) + ".lock"):
    cfg = pretrain_digits.get_config("runlocal").data
    cfg.dir = str(path)
    loader.prepare(cfg)
  return str(path)


@pytest.fixture(scope="session")
def runlocal_config(data_dir):
  """The demo config's runlocal variant pointed at the shared test data directory."""
  from configs import pretrain_digits
  config = pretrain_digits.get_config("runlocal")
  config.data.dir = data_dir
  return config


# --- Order of the files, for ./scripts/test.sh's two pytest-xdist workers (--dist loadfile).


def pytest_configure(config):
  # xdist hands out files with the most tests first: the end-to-end files (a few tests, minutes
  # each) would come last, and one worker would run them alone while the other idles. Keep
  # the order pytest_collection_modifyitems sets instead.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Files with end-to-end (`slow`) tests first, the most such tests first, then the quick
  files, the most tests first: both workers start on long files and end on short ones. A
  file's tests keep their order."""
  slow, count = collections.Counter(), collections.Counter()
  for item in items:
    path = item.nodeid.split("::")[0]
    count[path] += 1
    slow[path] += item.get_closest_marker("slow") is not None
  file_key = lambda path: (-slow[path], -count[path], path)
  items.sort(key=lambda item: file_key(item.nodeid.split("::")[0]))
