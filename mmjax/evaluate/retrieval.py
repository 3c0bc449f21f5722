"""Zero-shot cross-modal retrieval: every modality against every other, R@1 and R@5, among the
examples that have both.

A query's hit is, by cfg.hit, a candidate of the same class ('class', the default: for
mmjax_digits the same digit, so chance R@1 is 1 / num_classes; a dataset without labels has
each stored example as its own class) or the query's own pair ('pair': the item with its
image_id, instance-level retrieval as in mmjax_scenes' ablations). A dataset that stores several captions per image (coco_captions)
is read as a row per caption (mmjax.data.standard.every_caption) and scored by the standard
protocol (COCO Karpathy test: 5,000 images, ~25,000 captions): each image is one item however
many rows hold it, text->image ranks each caption against the images, and image->text ranks
every caption for each image, a hit when any of its captions is within k.
"""
import itertools
import typing

import jax
import numpy as np
from flax import nnx

from mmjax import modality as modality_lib
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.modality import presence_key
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib

KS = (1, 5)
HITS = ("class", "pair")
IMAGE = "image"  # The modality whose items the batch key image_id names.


class Rows(typing.NamedTuple):
  """An evaluated split, N rows (a row per caption where images have several)."""
  embeddings: dict  # {modality: f32[N, E]}.
  labels: np.ndarray  # int[N]: a hit is a candidate with the query's label.
  has: dict  # {modality: bool[N]}: the rows whose example has that modality.
  image_ids: np.ndarray  # int[N]: rows with one image_id hold one image.


def recall_at_k(queries_ne, candidates_me, query_labels, candidate_labels, ks=KS):
  """Fraction of queries with a same-label candidate among their k most similar (cosine)."""
  sims = queries_ne @ candidates_me.T
  order = np.argsort(-sims, axis=1, kind="stable")[:, :max(ks)]
  hits = candidate_labels[order] == query_labels[:, None]
  return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def items(modality, rows, image_ids):
  """Indices of the rows (bool[N]) that hold distinct items of `modality`: every row, but for
  images only the first row of each image_id (an image with five captions is one candidate,
  not five copies that would crowd the others out of the top k)."""
  index = np.flatnonzero(rows)
  if modality != IMAGE:
    return index
  _, first = np.unique(image_ids[index], return_index=True)
  return index[np.sort(first)]


def scores(rows, ks=KS):
  """{(a, b): {k: R@k}} of every direction between the modalities of `rows` (Rows), among the
  rows whose example has both: each item of a queries the items of b (see `items`)."""
  out = {}
  for a, b in itertools.permutations(rows.embeddings, 2):
    both = rows.has[a] & rows.has[b]
    if not both.any():
      continue
    q, c = items(a, both, rows.image_ids), items(b, both, rows.image_ids)
    out[(a, b)] = recall_at_k(rows.embeddings[a][q], rows.embeddings[b][c], rows.labels[q],
                              rows.labels[c], ks)
  return out


class Evaluator:
  """Embeds a whole split with each modality alone and scores all retrieval directions."""

  def __init__(self, cfg, *, name, config, info, mesh):
    self.cfg, self.name, self.data_cfg, self.info, self.mesh = cfg, name, config.data, info, mesh
    self._embed = None
    self._batch_axes, self._batch_size = mesh_lib.eval_batch(cfg.batch_size, mesh,
                                                                config.parallel.rules)
    self.hit = cfg.get("hit", "class")
    if self.hit not in HITS:
      raise UserError(f"config.evals.{name}.hit={self.hit!r}: use one of {list(HITS)}.")

  def embed_rows(self, model):
    """Rows of the evaluator's split, every caption included: embeddings of the modalities the
    split's dataset has, and which rows have each (all of them, but for a dataset of mixed
    examples)."""
    graphdef, state = nnx.split(model)
    if self._embed is None:  # One compile per run: the graphdef does not change.
      self._embed = jax.jit(lambda s, b: nnx.merge(graphdef, s).embed(b),
                            out_shardings=mesh_lib.replicated(self.mesh))
    # Modalities the evaluated dataset lacks altogether (a mixture's other entries have them)
    # are left out of the batches, so the model does not embed their zeros.
    own = self.info.evaluated()
    absent = set(modality_lib.batch_keys([m for m in self.info.modalities if m not in own]))
    chunks, labels, has, image_ids = [], [], [], []
    for batch in loader.split_batches(self.data_cfg, self.info, self.cfg.split,
                                      self._batch_size, every_caption=True):
      valid = batch.pop("valid")
      labels.append(batch.pop("label")[valid])
      image_ids.append(batch["image_id"][valid])
      has.append({m: batch.get(presence_key(m), valid)[valid] for m in own})
      batch = {k: v for k, v in batch.items() if k not in absent}
      # Every process reads the whole split; the embeddings come back replicated, so complete
      # on each process.
      batch = distributed.global_batch_from_full(batch, self.mesh, self._batch_axes)
      z = jax.device_get(self._embed(state, batch))
      chunks.append({m: np.asarray(v)[valid] for m, v in z.items()})
    join = lambda parts: {m: np.concatenate([p[m] for p in parts]) for m in parts[0]}
    return Rows(join(chunks), np.concatenate(labels), join(has), np.concatenate(image_ids))

  def embed_split(self, model):
    """({modality: f32[N,E]}, labels int32[N], {modality: bool[N]}) of the split's rows (see
    embed_rows), the flags marking each distinct item once (an image on several rows: its
    first), for evaluators that score items of one modality (zero_shot)."""
    rows = self.embed_rows(model)
    has = {m: np.isin(np.arange(len(rows.labels)), items(m, h, rows.image_ids))
           for m, h in rows.has.items()}
    return rows.embeddings, rows.labels, has

  def run(self, model, step, writer):
    del step, writer
    rows = self.embed_rows(model)
    if self.hit == "pair":  # Rows of one image_id hold one example's items.
      rows = rows._replace(labels=rows.image_ids)
    return {f"eval/{self.name}/{a}_to_{b}/r@{k}": r
            for (a, b), recall in scores(rows).items()
            for k, r in recall.items()}


def table(metrics, name="retrieval"):
  """A plain-text results table of the R@k metrics in `metrics`."""
  rows = sorted({k.split("/")[2] for k in metrics if k.startswith(f"eval/{name}/")})
  lines = [f"{'direction':<16}" + "".join(f"{f'R@{k}':>8}" for k in KS)]
  for row in rows:
    lines.append(f"{row:<16}" + "".join(
        f"{metrics[f'eval/{name}/{row}/r@{k}']:>8.3f}" for k in KS))
  return "\n".join(lines)
