"""The memory estimate (mmjax/train/memory.py) counts what a run holds beyond the step: the
optimizer update's transient copy, the checkpoint's host copy and XLA's runtime, and the check
refuses the size-H run of issue 22 (defect 9) that passed and was then OOM-killed."""
import math
import re

import jax
import numpy as np
import pytest

from configs import pretrain_digits
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.models import sizes
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import memory
from mmjax.train import optimizer
from mmjax.train import trainer
from mmjax.train import validate


def _planned(config, devices):
  """(info, mesh, abstract state, shardings) on `devices`, as the trainer makes them."""
  info = loader.prepare(config.data)
  mesh = mesh_lib.make_mesh(config.mesh, devices=devices)
  tx, _ = optimizer.make(config.optimizer, config.total_steps,
                         depth=sizes.of(config.model).depth)
  _, abstract_state = trainer.abstract_model(config, info, tx)
  rules = sharding.rules_from_config(config.parallel.rules)
  return info, mesh, abstract_state, sharding.param_shardings(abstract_state, mesh, rules)


def _bytes(tree):
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def test_estimate_counts_update_checkpoint_copy_and_runtime(runlocal_config):
  """On 8 CPU devices, data parallel: each device holds the whole state; the save's host copy
  is one replica of it (twice: measured), shared by the 8 devices' RAM, as is XLA's runtime."""
  config = runlocal_config.copy_and_resolve_references()
  info, mesh, abstract_state, shardings = _planned(config, jax.devices())
  numbers = memory.estimate(config, info, mesh, abstract_state, shardings)
  params, opt_state = _bytes(abstract_state["params"]), _bytes(abstract_state["opt_state"])
  assert numbers["params"] == params and numbers["opt_state"] == opt_state
  assert numbers["update"] == params
  assert numbers["checkpoint"] == 2 * _bytes(abstract_state) // 8
  assert numbers["runtime"] == memory.RUNTIME_BYTES // 8
  parts = ("params", "opt_state", "grads", "activations", "update", "checkpoint", "runtime")
  assert numbers["total"] == sum(numbers[k] for k in parts)


def test_refuses_within_the_margin(runlocal_config, monkeypatch):
  """A run is refused unless the estimate plus memory.MARGIN fits."""
  config = runlocal_config.copy_and_resolve_references()
  info, mesh, abstract_state, shardings = _planned(config, jax.devices())
  total = memory.estimate(config, info, mesh, abstract_state, shardings)["total"]
  args = (config, info, mesh, abstract_state, shardings)
  monkeypatch.setattr(memory, "device_bytes", lambda: (int(total * (1 + memory.MARGIN / 2)),
                                                       "a test's memory"))
  with pytest.raises(UserError, match=r"a margin of \d+%"):
    validate.check_memory(*args)
  monkeypatch.setattr(memory, "device_bytes", lambda: (int(total * (1 + memory.MARGIN) + 1),
                                                       "a test's memory"))
  validate.check_memory(*args)


def test_refuses_the_size_h_run_of_the_issue(data_dir, monkeypatch):
  """`main.py --config=configs/pretrain_digits.py:runlocal --config.model.size=H` on one CPU
  device with 22.7 GiB available: passed with "about 13.1 GiB", then was OOM-killed at 24 GB
  RSS just after its first save. (Scanned layers: the same bytes, traced in a second.)"""
  config = pretrain_digits.get_config("runlocal,size=H")
  config.data.dir, config.model.scan_layers = data_dir, True
  info, mesh, abstract_state, shardings = _planned(config, jax.devices()[:1])
  monkeypatch.setattr(memory, "device_bytes",
                      lambda: (int(22.7 * memory.GIB), "available host RAM (22.7 GiB)"))
  with pytest.raises(UserError) as raised:
    validate.check_memory(config, info, mesh, abstract_state, shardings)
  message = str(raised.value)
  # The state (2.4 + 4.9 GiB) is on the device and, while a save is written, twice on the host.
  assert re.search(r"parameters 2.4 GiB \+ optimizer state 4.9 GiB \+ gradients 2.4 GiB .*"
                   r"optimizer update 2.4 GiB \+ checkpoint host copy 14.7 GiB", message), message
  total = float(re.search(r"needs about ([\d.]+) GiB", message).group(1))
  assert total > 22.7
