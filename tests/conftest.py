"""Shared test set-up: a fake 8-device CPU pod and one small built-in dataset for all tests."""
import os

# Must happen before JAX initialises its backends: every test sees 8 CPU devices.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir():
  """A data directory reused across test runs (.cache/ is git-ignored), so the small dataset
  is synthesized once per machine rather than once per run."""
  path = REPO / ".cache" / "test_data"
  path.mkdir(parents=True, exist_ok=True)
  return str(path)


@pytest.fixture(scope="session")
def runlocal_config(data_dir):
  """The demo config's runlocal variant pointed at the shared test data directory."""
  from configs import pretrain_digits
  config = pretrain_digits.get_config("runlocal")
  config.data.dir = data_dir
  return config
