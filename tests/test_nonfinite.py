"""A NaN at step 3: config.on_nonfinite='stop' ends the run naming the step and the metric,
'skip' skips the update (the state stays as it was) and counts it. The skip run also reads a
dataset with bad examples under data.on_bad_example='skip': the train state counts those."""
import itertools
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.data import loader
from mmjax.data import sources
from mmjax.errors import NonFiniteError
from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer
from tests.test_bad_data import CORRUPTIONS

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.

POISONED = 3  # The step whose batch gets a NaN audio sample.


def _config(runlocal_config, policy):
  config = runlocal_config.copy_and_resolve_references()
  config.total_steps, config.log_every = 4, 1
  config.checkpoint_every, config.keep_checkpoints = 1, 4
  config.evals = ml_collections.ConfigDict()  # Not what these tests are about.
  config.model.scan_layers = True  # Compiles faster.
  config.on_nonfinite = policy
  return config


@pytest.fixture
def poisoned(monkeypatch):
  calls = itertools.count(1)
  real = trainer.with_rows

  def with_rows(batch, batch_size):
    batch = real(batch, batch_size)
    if next(calls) == POISONED:  # NaN in one real sample of each clip.
      first_real = np.argmax(batch["audio_mask"], axis=1)[:, None]
      batch = batch | {"audio": np.where(np.arange(batch["audio"].shape[1]) == first_real,
                                         np.float32(np.nan), batch["audio"])}
    return batch

  monkeypatch.setattr(trainer, "with_rows", with_rows)


def _state(workdir, step):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))


def test_stop_names_the_step_and_metric(runlocal_config, poisoned, tmp_path):
  del poisoned
  with pytest.raises(NonFiniteError, match=rf"Step {POISONED}: train/loss/contrastive is nan\. "
                     r"The update was not applied .*the last checkpoint is at step 2\."):
    trainer.train_and_evaluate(_config(runlocal_config, "stop"), str(tmp_path))
  # The checkpoints before the NaN were completed, not left half written.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_skip_leaves_the_state_and_counts(runlocal_config, poisoned, monkeypatch, tmp_path):
  del poisoned
  config = _config(runlocal_config, "skip")
  config.data.on_bad_example = "skip"
  train = [dict(r) for r in sources.raw_source(config.data, "train")]
  raw = sources.raw_source
  for i, (change, _) in zip(range(0, 140, 10), itertools.cycle(CORRUPTIONS.values())):
    train[i] |= change
  monkeypatch.setattr(sources, "raw_source",
                      lambda cfg, split: train if split == "train" else raw(cfg, split))
  info = loader.prepare(config.data)
  batches = loader.train_loader(config.data, info, global_batch_size=config.batch_size,
                                seed=config.seed, process_index=0, process_count=1)
  replaced = sum(int(b["skipped"].sum()) for b, _ in zip(batches, range(config.total_steps)))
  assert replaced > 0

  trainer.train_and_evaluate(config, str(tmp_path))
  rows = {r["step"]: r for r in metrics_lib.read_jsonl(str(tmp_path)) if "train/loss" in r}
  assert [rows[s]["train/skipped_steps"] for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
  assert [rows[s]["train/nonfinite_streak"] for s in (1, 2, 3, 4)] == [0, 0, 1, 0]
  assert np.isnan(rows[POISONED]["train/loss"]) and np.isfinite(rows[4]["train/loss"])
  assert rows[4]["train/bad_examples_skipped"] == replaced
  # The skipped step changed nothing but the counters; the next one trained again.
  before, after, last = (_state(str(tmp_path), s) for s in (POISONED - 1, POISONED, 4))
  jax.tree.map(np.testing.assert_array_equal, before["params"], after["params"])
  jax.tree.map(np.testing.assert_array_equal, before["opt_state"]["inner_state"],
               after["opt_state"]["inner_state"])
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)),
                         after["params"], last["params"])
  assert np.mean(jax.tree.leaves(changed)) > 0.8  # (A few, e.g. unused mask tokens, get no gradient.)
