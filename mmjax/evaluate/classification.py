"""Classification accuracy of a fine-tuned classifier (model name 'classifier', or the raw-input
baseline 'raw': mmjax.models.CLASSIFIERS) on a split."""
import jax
import numpy as np
from flax import nnx

from mmjax import models
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib


class Evaluator:
  """Top-1 accuracy over every example of cfg.split (cfg: split, batch_size)."""

  def __init__(self, cfg, *, name, config, info, mesh):
    if config.model.name not in models.CLASSIFIERS:
      raise UserError(f"config.evals.{name} (classification) needs a classifier model "
                      f"(config.model.name one of {list(models.CLASSIFIERS)}), not "
                      f"{config.model.name!r}.")
    self.cfg, self.name, self.data_cfg, self.info, self.mesh = cfg, name, config.data, info, mesh
    self._logits = None
    self._batch_axes, self._batch_size = mesh_lib.eval_batch(cfg.batch_size, mesh,
                                                                config.parallel.rules)

  def run(self, model, step, writer):
    del step, writer
    graphdef, state = nnx.split(model)
    if self._logits is None:
      self._logits = jax.jit(
          lambda s, b: nnx.merge(graphdef, s)(b)["classification"]["logits"],
          out_shardings=mesh_lib.replicated(self.mesh))
    correct, total = 0, 0
    for batch in loader.split_batches(self.data_cfg, self.info, self.cfg.split,
                                      self._batch_size):
      valid = batch.pop("valid")
      logits = jax.device_get(
          self._logits(state, distributed.global_batch_from_full(batch, self.mesh,
                                                                 self._batch_axes)))
      correct += int((np.asarray(logits).argmax(-1) == batch["label"])[valid].sum())
      total += int(valid.sum())
    return {f"eval/{self.name}/accuracy": correct / max(total, 1)}
