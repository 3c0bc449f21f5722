"""Classification accuracy of a fine-tuned classifier (model name 'classifier', or the raw-input
baseline 'raw': mmjax.models.classifies) on a split: top-1, and top-k for each k of
cfg.top_k beyond 1 (e.g. (1, 5), ImageNet's protocol: mmjax.evaluate.protocols)."""
import jax
import numpy as np
from flax import nnx

from mmjax import models
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.evaluate import protocols
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib


class Evaluator:
  """Top-1 (and cfg.top_k) accuracy over every example of cfg.split (cfg: split, batch_size,
  optionally top_k)."""

  def __init__(self, cfg, *, name, config, info, mesh):
    if not models.classifies(config.model.name):
      raise UserError(f"config.evals.{name} (classification) needs a model that classifies "
                      f"(one with classifies = True: 'classifier', 'raw'), not "
                      f"config.model.name={config.model.name!r}.")
    self.cfg, self.name, self.data_cfg, self.info, self.mesh = cfg, name, config.data, info, mesh
    self._logits = None
    self.ks = tuple(sorted({1, *cfg.get("top_k", (1,))}))
    if any(k < 1 or k > max(info.num_classes, 1) for k in self.ks):
      raise UserError(f"config.evals.{name}.top_k={list(cfg.top_k)}: each k must be in 1.."
                      f"{info.num_classes} (the classes of {info.name!r}).")
    self._batch_axes, self._batch_size = mesh_lib.eval_batch(cfg.batch_size, mesh,
                                                                config.parallel.rules)

  def run(self, model, step, writer):
    del step, writer
    graphdef, state = nnx.split(model)
    if self._logits is None:
      self._logits = jax.jit(
          lambda s, b: nnx.merge(graphdef, s)(b)["classification"]["logits"],
          out_shardings=mesh_lib.replicated(self.mesh))
    correct, total = dict.fromkeys(self.ks, 0.0), 0
    for batch in loader.split_batches(self.data_cfg, self.info, self.cfg.split,
                                      self._batch_size):
      valid = batch.pop("valid")
      logits = jax.device_get(
          self._logits(state, distributed.global_batch_from_full(batch, self.mesh,
                                                                 self._batch_axes)))
      n = int(valid.sum())
      if n:
        accuracy = protocols.top_k_accuracy(np.asarray(logits)[valid], batch["label"][valid],
                                            self.ks)
        correct = {k: correct[k] + n * accuracy[k] for k in self.ks}
      total += n
    return {f"eval/{self.name}/" + ("accuracy" if k == 1 else f"top{k}_accuracy"):
            correct[k] / max(total, 1) for k in self.ks}
