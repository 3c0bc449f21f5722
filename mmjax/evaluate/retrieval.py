"""Zero-shot cross-modal retrieval: every modality against every other, R@1 and R@5, among the
examples that have both.

A query's hit is a candidate of the same class (for the built-in dataset: the same digit), so
chance R@1 is 1 / num_classes.
"""
import itertools

import jax
import numpy as np
from flax import nnx

from mmjax import modalities as modality_lib
from mmjax.data import loader
from mmjax.modalities import presence_key
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib

KS = (1, 5)


def recall_at_k(queries_ne, candidates_me, query_labels, candidate_labels, ks=KS):
  """Fraction of queries with a same-label candidate among their k most similar (cosine)."""
  sims = queries_ne @ candidates_me.T
  order = np.argsort(-sims, axis=1, kind="stable")[:, :max(ks)]
  hits = candidate_labels[order] == query_labels[:, None]
  return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


class Evaluator:
  """Embeds a whole split with each modality alone and scores all retrieval directions."""

  def __init__(self, cfg, *, name, config, info, mesh):
    self.cfg, self.name, self.data_cfg, self.info, self.mesh = cfg, name, config.data, info, mesh
    self._embed = None
    self._batch_axes, self._batch_size = mesh_lib.eval_batch(cfg.batch_size, mesh,
                                                                config.parallel.rules)

  def embed_split(self, model):
    """Returns ({modality: f32[N,E]}, labels int32[N], {modality: bool[N]}) for the evaluator's
    split: embeddings of the modalities the split's dataset has, and which examples have each
    (all of them, but for a dataset of mixed examples)."""
    graphdef, state = nnx.split(model)
    if self._embed is None:  # One compile per run: the graphdef does not change.
      self._embed = jax.jit(lambda s, b: nnx.merge(graphdef, s).embed(b),
                            out_shardings=mesh_lib.replicated(self.mesh))
    # Modalities the evaluated dataset lacks altogether (a mixture's other entries have them)
    # are left out of the batches, so the model does not embed their zeros.
    own = self.info.evaluated()
    absent = set(modality_lib.batch_keys([m for m in self.info.modalities if m not in own]))
    chunks, labels, has = [], [], []
    for batch in loader.split_batches(self.data_cfg, self.info, self.cfg.split,
                                      self._batch_size):
      valid = batch.pop("valid")
      labels.append(batch.pop("label")[valid])
      has.append({m: batch.get(presence_key(m), valid)[valid] for m in own})
      batch = {k: v for k, v in batch.items() if k not in absent}
      # Every process reads the whole split; the embeddings come back replicated, so complete
      # on each process.
      batch = distributed.global_batch_from_full(batch, self.mesh, self._batch_axes)
      z = jax.device_get(self._embed(state, batch))
      chunks.append({m: np.asarray(v)[valid] for m, v in z.items()})
    join = lambda parts: {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
    return join(chunks), np.concatenate(labels), join(has)

  def run(self, model, step, writer):
    del step, writer
    embeddings, labels, has = self.embed_split(model)
    metrics = {}
    for a, b in itertools.permutations(embeddings, 2):
      rows = has[a] & has[b]  # Examples with both sides.
      if not rows.any():
        continue
      for k, r in recall_at_k(embeddings[a][rows], embeddings[b][rows], labels[rows],
                              labels[rows]).items():
        metrics[f"eval/{self.name}/{a}_to_{b}/r@{k}"] = r
    return metrics


def table(metrics, name="retrieval"):
  """A plain-text results table of the R@k metrics in `metrics`."""
  rows = sorted({k.split("/")[2] for k in metrics if k.startswith(f"eval/{name}/")})
  lines = [f"{'direction':<16}" + "".join(f"{f'R@{k}':>8}" for k in KS)]
  for row in rows:
    lines.append(f"{row:<16}" + "".join(
        f"{metrics[f'eval/{name}/{row}/r@{k}']:>8.3f}" for k in KS))
  return "\n".join(lines)
