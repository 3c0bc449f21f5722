"""One way to plug things in (mmjax.registry): a model and an evaluator defined here, outside
mmjax/, registered by name, train and evaluate through the trainer like the built-in ones (the
fourth modality and its objective: tests/test_modalities.py); unknown names get one message
style with a suggestion."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mmjax import evaluate
from mmjax import models
from mmjax import registry
from mmjax.errors import UserError
from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer


class PriorOnly(nnx.Module):
  """A classifier that sees nothing of the input: learned class logits (the label prior)."""
  classifies = True

  def __init__(self, config, info, *, rngs):
    del config, rngs
    self.logits = nnx.Param(jnp.zeros((info.num_classes,), jnp.float32))

  def __call__(self, batch, *, key=None, mask_ratios=None, embeddings=None):
    del key, mask_ratios, embeddings
    b = batch["label"].shape[0]
    logits = jnp.broadcast_to(self.logits[...], (b,) + self.logits.shape)
    return {"classification": {"logits": logits, "labels": batch["label"]}}


class ParameterCount:
  """An evaluator: the model's number of parameters (eval/<name>/parameters)."""

  def __init__(self, cfg, *, name, config, info, mesh):
    del cfg, config, info, mesh
    self.name = name

  def run(self, model, step, writer):
    del step, writer
    count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {f"eval/{self.name}/parameters": float(count)}


@pytest.fixture
def registered():
  models.register("prior_only", PriorOnly)
  evaluate.register("parameter_count", ParameterCount)
  yield
  models.unregister("prior_only")
  evaluate.unregister("parameter_count")


@pytest.mark.slow  # End-to-end training.
def test_a_model_and_an_evaluator_from_outside_mmjax_train_and_evaluate(registered, data_dir,
                                                                        tmp_path):
  """The fine-tuning config with config.model.name and one evaluator swapped for the ones
  registered here: it trains and both evaluators report."""
  from configs import finetune_digits  # pylint: disable=g-import-not-at-top
  config = finetune_digits.get_config("task=image,mode=full,runlocal")
  config.data.dir, config.init_from, config.model.name = data_dir, "", "prior_only"
  config.total_steps, config.log_every, config.eval_every = 6, 1, 6
  config.optimizer.learning_rate = 0.1
  config.evals = ml_collections.ConfigDict({
      "classification": config.evals.classification.to_dict(),
      "size": {"type": "parameter_count"}})
  assert "prior_only" in models.names() and "parameter_count" in evaluate.names()
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert metrics["eval/size/parameters"] == 10  # One logit per digit.
  assert 0 < metrics["eval/classification/accuracy"] <= 1
  losses = [r["train/loss"] for r in metrics_lib.read_jsonl(str(tmp_path / "run"))
            if "train/loss" in r]
  # The registered model is what trained: zero logits first (a loss of ln 10), then updated.
  np.testing.assert_allclose(losses[0], np.log(10), rtol=1e-5)
  assert losses[-1] != losses[0] and np.isfinite(losses).all()


def test_unknown_names_get_one_message_with_a_suggestion(registered):
  with pytest.raises(UserError, match=r"config.model.name='prior_onyl': no model of that name\. "
                                      r"Did you mean 'prior_only'\?"):
    models.get("prior_onyl")
  with pytest.raises(UserError, match=r"config.evals.x.type='parameter_cont': no evaluator .* "
                                      r"'parameter_count'"):
    evaluate.get("x", ml_collections.ConfigDict({"type": "parameter_cont"}))
  assert registry.unknown("op", "zzz", ["a", "b"]) == "'zzz': no op of that name. Known: a, b."
  models.unregister("prior_only")
  with pytest.raises(UserError, match="no model"):
    models.get("prior_only")
