"""Streams of examples: the shuffled, endless training stream of this process's rows of every
global batch (seeded, mixed, resumable), and a split's batches in stored order for
evaluation."""
import functools
import itertools

import grain
import numpy as np

from mmjax.data import ops
from mmjax.data import pipeline
from mmjax.data import prepare
from mmjax.data import standard
from mmjax.errors import UserError


def labelled_subset(reader, per_class, seed):
  """Sorted indices of `per_class` examples of each class of the reader's split, drawn at random
  from `seed` (the same draw for every process). A class with fewer examples gives them all."""
  key = reader.label_key
  if key not in reader.source[0]:
    raise UserError(f"data.labels_per_class={per_class}: {reader.name} {reader.split} has no "
                    f"class labels ({key!r}).")
  labels = np.array([int(reader.source[i][key]) for i in range(len(reader))])
  rng = np.random.default_rng(seed)
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
  return np.sort(np.concatenate(chosen)).tolist()


def _tag_source(example, source):
  return example | {"source": np.int32(source)}


def _shard(process_index, process_count):
  import jax  # pylint: disable=g-import-not-at-top
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


class _ProcessRows(grain.MapDataset):
  """This process's rows of every global batch: element j is element
  (j // b) * B + p * b + j % b of the global stream (B global, b = B / P per process)."""

  def __init__(self, parent, global_batch_size, process_index, process_count):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = global_batch_size // process_count
    self._offset = process_index * self._local

  def __len__(self):
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._offset + row]


def train_loader(data_cfg, info, *, global_batch_size, seed, process_index=None,
                 process_count=None, start_batch=0):
  """An endless, shuffled stream of this process's share of every global batch, from global
  batch `start_batch` on.

  The global stream (shuffle order, epochs and augmentation) depends only on `seed`: global
  batch t is stream elements [t*B, (t+1)*B), and process p reads, decodes and preprocesses only
  its rows [p*B/P, (p+1)*B/P) of it. So every process count, worker count and mesh sees the
  same global batches, and a run resumes at step t by starting at batch t: the position is a
  function of the step, never a saved per-process iterator state (which would tie a resume to
  the process and worker counts of the run that saved it).
  """
  return batches_from(train_batches(data_cfg, info, global_batch_size=global_batch_size,
                                    seed=seed, process_index=process_index,
                                    process_count=process_count), data_cfg, start_batch)


def train_batches(data_cfg, info, *, global_batch_size, seed, process_index=None,
                  process_count=None):
  """This process's batches of the training stream as an indexable grain MapDataset (batch t
  at index t; nothing is read until indexed). Checks what can be checked without reading:
  UserError for a seed grain cannot take, a batch the processes do not divide, a split
  smaller than a batch, a labelled subset of a split without labels."""
  process_index, process_count = _shard(process_index, process_count)
  if not 0 <= seed < 2**32:
    raise UserError(f"seed={seed}: grain's shuffle needs a seed in [0, 2**32).")
  if global_batch_size % process_count:
    raise UserError(f"batch_size={global_batch_size} must be divisible by the number of "
                    f"processes ({process_count}).")
  components = prepare.mixture_components(data_cfg, info)
  streams = []
  for i, (cfg, _) in enumerate(components):
    reader = pipeline.Reader(cfg, info, cfg.train_split, train=True,
                     modalities=info.mixture_modalities[i] if info.mixture_modalities else None)
    subset = labelled_subset(reader, cfg.labels_per_class, seed) if cfg.labels_per_class else None
    if len(reader) < global_batch_size and len(components) == 1 and subset is None:
      raise UserError(f"{info.name} train split has {len(reader)} examples, fewer than "
                      f"batch_size={global_batch_size}; use a larger dataset (data.max_images).")
    # Each entry of a mixture gets its own seed, derived from `seed`.
    part_seed = seed if len(components) == 1 else int(
        np.random.SeedSequence((seed, i)).generate_state(1)[0])
    # A fresh permutation of the whole split every epoch (repeat reseeds the shuffle per
    # epoch); random ops are seeded by the element's position in the stream.
    ds = (grain.MapDataset.range(len(reader)) if subset is None
          else grain.MapDataset.source(subset))
    ds = ds.shuffle(seed=part_seed).repeat(None)
    ds = ds.map_with_index(pipeline.ReadOrReplace(reader, part_seed))
    streams.append(ds.map(functools.partial(_tag_source, source=i)))
  # Entries interleave in proportion to their weights (grain's deterministic mix).
  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(
      streams, [w for _, w in components])
  ds = _ProcessRows(ds, global_batch_size, process_index, process_count)
  return ds.batch(global_batch_size // process_count, drop_remainder=True)


def batches_from(batches, data_cfg, start_batch=0):
  """An iterable of `batches` (train_batches) from index `start_batch` on, read ahead by one
  thread, or by data.num_workers processes."""
  if start_batch < 0:
    raise ValueError(f"start_batch={start_batch} must be >= 0")
  ds = batches[start_batch:] if start_batch else batches
  # grain's default 16 reader threads fight over the GIL for records that take microseconds to
  # read (1.5x slower here); data.num_workers processes are the way to scale up.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=64))
  if data_cfg.num_workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  return ds


def split_batches(data_cfg, info, split, batch_size, *, every_caption=False):
  """Yields all of `split` once, in stored order, in batches of exactly batch_size.

  No augmentation. The last batch is filled up by repeating its first row, with
  valid bool[B] False on the filler rows. Bad examples raise UserError or, with
  data.on_bad_example='skip', are left out. every_caption: a row per caption where a
  dataset stores several per example (retrieval's protocol; mmjax.data.standard).
  """
  if split not in info.split_sizes:
    raise UserError(f"{info.name} has no split {split!r}; it has {sorted(info.split_sizes)}.")
  if batch_size <= 0:
    raise UserError(f"The evaluation batch_size must be positive, got {batch_size}.")
  reader = pipeline.Reader(data_cfg, info, split, train=False, modalities=info.eval_modalities)
  if every_caption:
    reader.source = standard.every_caption(data_cfg.name, reader.source)

  def examples():
    for index in range(len(reader)):
      try:
        yield reader(index)
      except ops.BadExample as e:
        reader.bad(index, e)

  it = examples()
  while rows := list(itertools.islice(it, batch_size)):
    valid = np.arange(batch_size) < len(rows)
    rows += [rows[0]] * (batch_size - len(rows))
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch["valid"] = valid
    yield batch
