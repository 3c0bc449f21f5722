"""From a data config to a DatasetInfo: checks the config, builds a built-in dataset on first
use (one process at a time), finds its modalities (the registry's features it has), lets each
modality describe itself (text learns its vocab), and reads the batch shapes the preprocessing
makes."""
import dataclasses
import os

import ml_collections
import numpy as np

from mmjax import modality as modality_lib
from mmjax.data import info as info_lib
from mmjax.data import ops
from mmjax.data import pipeline
from mmjax.data import sources
from mmjax.data import standard
from mmjax.errors import UserError

BAD_EXAMPLE_POLICIES = ("error", "skip")


def check_config(data_cfg):
  """Raises UserError, naming the key, for settings that cannot work."""
  def need(ok, key, what):
    if not ok:
      raise UserError(f"data.{key}={data_cfg[key]!r}: {what}")

  need(isinstance(data_cfg.dir, str) and data_cfg.dir.strip(), "dir",
       "set it to a directory for the built datasets, e.g. --config.data.dir=~/mmjax_data.")
  for m in modality_lib.names():
    modality_lib.get(m).check_data_config(data_cfg, need)
  need(data_cfg.num_workers >= 0, "num_workers", "must be >= 0 (0: no worker processes).")
  need(data_cfg.labels_per_class >= 0, "labels_per_class",
       "must be >= 0 (0: every example of the train split).")
  need(data_cfg.on_bad_example in BAD_EXAMPLE_POLICIES, "on_bad_example",
       f"must be one of {BAD_EXAMPLE_POLICIES}.")
  for key in ("pp_train", "pp_eval"):  # Op names and syntax now; arguments when built.
    ops.parse(data_cfg[key], where=f"data.{key}")


def _build_once(data_cfg, module, builder):
  """Builds a built-in dataset, one process at a time: runs started together on a fresh
  data.dir (a SLURM array) would each build it, and all but the first fail to move their copy
  into place. The others wait on a file lock in data.dir, then read the first one's build
  (filelock's: fcntl.flock, released when its process dies; on a network filesystem without
  flock, filelock falls back to the lock file's existence). Returns the builder to read it
  with."""
  import filelock  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = os.fspath(builder.data_dir_root)
  sources.writable_dir(root, f"{data_cfg.name} must be built there first")
  # One lock per dataset, config and version (mmjax_digits/sr8000_all_e3/1.0.0).
  lock = os.path.join(root, f".{builder.info.full_name.replace('/', '-')}.lock")
  with filelock.FileLock(lock):
    # Asked again: built meanwhile, a new builder reads it (one made before has no splits).
    module, builder = sources.builder(data_cfg)
    if not builder.is_prepared():
      module.require_build_tools()
      builder.download_and_prepare(
          # Everything is generated locally: never look for a prebuilt copy on GCS.
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def _modalities(data_cfg, features):
  """The dataset's modalities: a standard dataset's own list, else every registered modality
  whose stored feature it has."""
  known = standard.DATASETS.get(data_cfg.name)
  found = known.modalities if known else tuple(
      m for m in modality_lib.names() if modality_lib.get(m).feature in features)
  if not found:
    wanted = [modality_lib.get(m).feature for m in modality_lib.names()]
    raise UserError(f"{data_cfg.name} has none of the features {' / '.join(wanted)} "
                    f"(it has {sorted(features)}).")
  return modality_lib.ordered(found)


def prepare(data_cfg):
  """Builds the dataset (first use only) and its vocab; returns its DatasetInfo.

  Building needs the dataset's tools (espeak-ng for mmjax_digits) and a writable data.dir;
  reading a built dataset needs neither.
  """
  check_config(data_cfg)
  module, builder = sources.builder(data_cfg)
  if module is None and not sources.readable(data_cfg):
    raise UserError(f"data.name={data_cfg.name!r} is not prepared in data.dir={data_cfg.dir!r}, "
                    "and mmjax does not download datasets: prepare it there first (README: "
                    "Standard datasets, Your own data).")
  if module is not None and not builder.is_prepared():
    builder = _build_once(data_cfg, module, builder)
  dataset = sources.Prepared(data_cfg, module, builder, standard.DATASETS.get(data_cfg.name))
  features = builder.info.features
  found = _modalities(data_cfg, features)
  fields, shapes = {}, {}
  for m in found:
    shapes |= modality_lib.get(m).stored_shapes(data_cfg, features)
    fields |= modality_lib.get(m).describe(data_cfg, dataset)
  # Without labels, each example is its own class: retrieval then finds the exact pair.
  label = features[data_cfg.label_key] if data_cfg.label_key in features else None
  if data_cfg.label_key != "label" and not hasattr(label, "num_classes"):
    raise UserError(f"data.label_key={data_cfg.label_key!r}: {data_cfg.name} has no class-label "
                    f"feature of that name; its class labels are "
                    f"{sorted(k for k, f in features.items() if hasattr(f, 'num_classes'))}.")
  info = info_lib.DatasetInfo(
      name=data_cfg.name, modalities=found, shapes=shapes,
      num_classes=label.num_classes if label else 0,
      class_names=tuple(label.names) if label else (),
      split_sizes=sources.split_sizes(data_cfg, builder), **fields)
  unknown = [s for s in (p.split("[")[0].strip() for p in data_cfg.train_split.split("+"))
             if s not in info.split_sizes]
  if unknown:  # Else TFDS's traceback from the first read of it, just below.
    raise UserError(f"data.train_split={data_cfg.train_split!r}: dataset {info.name!r} has no "
                    f"split {unknown[0]!r}; it has {sorted(info.split_sizes)}.")
  info = dataclasses.replace(info, shapes=_output_shapes(data_cfg, info))
  return _with_mixture(data_cfg, info) if data_cfg.mixture else info


def mixture_components(data_cfg, info=None):
  """[(data config, weight)] of what training reads: data.mixture's entries (each the data
  config with its fields changed, sharing `info`'s vocab), or the data config alone."""
  if not data_cfg.mixture:
    return [(data_cfg, 1.0)]
  base = data_cfg.to_dict()
  base["mixture"] = {}
  components = []
  for key, entry in data_cfg.mixture.items():
    cfg = ml_collections.ConfigDict(base)
    for field, value in entry.items():
      if field == "weight":
        continue
      if field not in cfg or field == "mixture":
        raise UserError(f"data.mixture.{key}.{field}: not a data field to change; fields: "
                        f"{sorted(k for k in cfg if k != 'mixture')}.")
      cfg[field] = value
    if info is not None and "vocab_file" not in entry:
      cfg.vocab_file = info.vocab_file  # One tokenizer for every entry.
    weight = entry.get("weight", 0)
    if not weight > 0:
      raise UserError(f"data.mixture.{key}.weight={weight!r}: give a positive weight.")
    components.append((cfg, float(weight)))
  return components


def _with_mixture(data_cfg, info):
  """`info` widened to the union of the mixture entries' modalities. Entries that share a
  modality must agree on its batch shapes (and what the modality lists in `agree`: audio's
  sample rate); its other fields (text's vocab) come from the data config, or from the first
  entry that has it when the data config does not."""
  parts = {key: prepare(cfg) for key, (cfg, _) in zip(data_cfg.mixture,
                                                         mixture_components(data_cfg, info))}
  shapes = dict(info_lib.batch_shapes(info))
  origin = dict.fromkeys(shapes, "data")
  defined_by = {m: info for m in info.modalities}  # Modality -> the part that defines it.
  for key, part in parts.items():
    for k, shape in info_lib.batch_shapes(part).items():
      if shapes.setdefault(k, shape) != shape:
        raise UserError(
            f"data.mixture.{key} ({part.name}) makes {k!r} of shape {list(shape)}, but "
            f"{origin[k]} ({defined_by[modality_lib.of_key(k)].name}) makes {list(shapes[k])}; "
            "entries that share a modality must make the same batch shapes (set its pp_train).")
      origin.setdefault(k, f"data.mixture.{key}")
    for m in part.modalities:
      defining = defined_by.setdefault(m, part)
      for field in modality_lib.get(m).agree:
        if getattr(part, field) != getattr(defining, field):
          raise UserError(f"data.mixture.{key}.{field}={getattr(part, field)!r}, but "
                          f"{defining.name}'s {m} has {getattr(defining, field)!r}; one model "
                          f"reads every entry's {m} (set its pp_train).")
  union = modality_lib.ordered(defined_by)
  fields = {}
  for m in union:  # Each modality's DatasetInfo fields, from the part that defines it.
    fields |= {f: getattr(defined_by[m], f) for f in modality_lib.get(m).info_fields}
  return dataclasses.replace(
      info, modalities=union, shapes=shapes,
      mixture_modalities=tuple(p.modalities for p in parts.values()),
      eval_modalities=info.modalities, **fields)


def _output_shapes(data_cfg, info):
  """{batch key: shape} of what data.pp_train / pp_eval make, from the first usable train
  example; both must make the same keys and shapes (one model reads both)."""
  source = sources.raw_source(data_cfg, data_cfg.train_split)
  pipes = {train: pipeline.make(data_cfg, info, info.modalities, train=train)
           for train in (True, False)}
  for index in range(min(len(source), pipeline.MAX_BAD_IN_A_ROW)):
    example = pipeline.stored(source, index, data_cfg.label_key)
    try:
      out = {train: pipeline.finish(pipe(example, np.random.default_rng(0)), keys, None,
                                    pipe.where)
             for train, (pipe, keys) in pipes.items()}
    except ops.BadExample:
      continue
    shapes = {train: {k: v.shape for k, v in o.items() if k in info.shapes}
              for train, o in out.items()}
    if shapes[True] != shapes[False]:
      raise UserError(f"data.pp_train makes {shapes[True]}, but data.pp_eval makes "
                      f"{shapes[False]}; one model reads both, so they must agree.")
    return info.shapes | shapes[False]
  raise UserError(f"{info.name}: none of the first {pipeline.MAX_BAD_IN_A_ROW} train examples "
                  "survives data.pp_eval; the dataset or the op string is broken.")
