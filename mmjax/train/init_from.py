"""Starting a run from another run's weights (config.init_from): a partial restore by name.

  params, report = init_from.restore(path, abstract_params, fresh_params)

`path` is a pretraining workdir (its latest checkpoint), a checkpoint manager directory
(`WORKDIR/checkpoints`) or one step's directory (`WORKDIR/checkpoints/800`). Parameters are
matched by their path in the model (`tokenizers/image/patch_embed/kernel`, ...):

- loaded: in the checkpoint with the same shape;
- resized: in the checkpoint with another shape that a documented rule maps: a learned position
  table (`pos_embed`, the text tokenizer's) interpolated to a new text length (see `resize`).
  Image and audio positions are fixed sin-cos tables (mmjax/models/posemb.py) made for the
  input's token grid, so a new image size or audio length has no parameter to resize;
- new: not in the checkpoint (a task head), kept as initialized;
- unused: in the checkpoint but not in this model (the pretraining decoder, projections).

Any other shape difference is a UserError naming the parameter and both shapes. Only the
parameters are read (never the optimizer state), each straight into its sharding on this run's
mesh, so pretraining and fine-tuning may use different meshes and device counts.
"""
import json
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from mmjax.errors import UserError
from mmjax.train import param_names

STATE_ITEM = "state"  # The train state's item in a step directory (mmjax.train.checkpoint).
RESIZABLE = ("pos_embed",)  # Parameter names that `resize` may interpolate.


def _is_step_dir(path):
  return os.path.isdir(os.path.join(path, STATE_ITEM))


def step_dir(path):
  """The checkpoint step directory `path` names (see the module docstring), or UserError."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise UserError(f"config.init_from={path!r}: no such directory.")
  if _is_step_dir(path):
    return path
  for root in (os.path.join(path, "checkpoints"), path):
    steps = [int(d) for d in (os.listdir(root) if os.path.isdir(root) else ())
             if d.isdigit() and _is_step_dir(os.path.join(root, d))]
    if steps:
      return os.path.join(root, str(max(steps)))
  raise UserError(f"config.init_from={path!r} holds no checkpoint: give a pretraining workdir, "
                  "its checkpoints/ directory or one of its step directories.")


def _flatten(tree):
  """{'a/b/c': leaf} of a nested dict / nnx.State (leaves: arrays or shape structs)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {param_names.name(path): leaf for path, leaf in flat}


def _raw_paths(tree):
  """{'a/b/c': [keys as stored]} (with an nnx.State's 'value')."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {param_names.name(path): [param_names.key(k) for k in path] for path, _ in flat}


def flatten_shapes(tree):
  """{'param/path': shape} of a parameter tree (arrays or shape structs)."""
  return {k: tuple(v.shape) for k, v in _flatten(tree).items()}


class _NoMissingMetadataWarning(logging.logging.Filter):
  """Orbax warns that an item's own _CHECKPOINT_METADATA is missing when asked for the item's
  metadata alone; the step's metadata is one level up, and nothing is wrong."""

  def filter(self, record):
    return "Metadata file does not exist" not in record.getMessage()


def state_metadata(directory):
  """The metadata tree (shapes and dtypes, no data) of the train state saved in a step
  directory: {} when it has none; Orbax's exception when it cannot be read."""
  quiet = _NoMissingMetadataWarning()
  logging.get_absl_logger().addFilter(quiet)
  try:
    meta = ocp.PyTreeCheckpointer().metadata(os.path.join(directory, STATE_ITEM))
  finally:
    logging.get_absl_logger().removeFilter(quiet)
  tree = getattr(meta, "item_metadata", meta)
  return getattr(tree, "tree", tree) or {}


def checkpoint_shapes(directory):
  """{'param/path': shape} of the parameters saved in a step directory (metadata only)."""
  tree = state_metadata(directory)
  if "params" not in tree:
    raise UserError(f"config.init_from: {directory} is not an mmjax train state (it has "
                    f"{sorted(tree)}).")
  return flatten_shapes(tree["params"])


def resize(table, shape):
  """A learned position table [*grid, width] interpolated (linearly) to [*new grid, width].

  The grid axes are all but the last; the width must not change. A constant field stays
  constant; a table that varies smoothly over its grid keeps its pattern, stretched.
  """
  if table.shape[-1] != shape[-1] or table.ndim != len(shape):
    raise ValueError(f"cannot resize {table.shape} to {shape}")
  return jax.image.resize(table.astype(jnp.float32), shape, method="linear").astype(table.dtype)


def _resizable(name):
  return any(part in RESIZABLE for part in name.split("/"))


def match(target_shapes, saved_shapes):
  """Sorts parameter paths into loaded / resized / new / unused; UserError on other shapes."""
  report = {"loaded": [], "resized": [], "new": [], "unused": []}
  bad = []
  for name, shape in sorted(target_shapes.items()):
    if name not in saved_shapes:
      report["new"].append(name)
    elif tuple(saved_shapes[name]) == tuple(shape):
      report["loaded"].append(name)
    elif _resizable(name) and len(saved_shapes[name]) == len(shape):
      report["resized"].append(name)
    else:
      bad.append(f"{name}: checkpoint {list(saved_shapes[name])}, model {list(shape)}")
  if bad:
    raise UserError("config.init_from: these parameters have other shapes than in the checkpoint "
                    "and no resize rule applies (only learned position tables are "
                    "interpolated):\n  " + "\n  ".join(bad))
  report["unused"] = sorted(set(saved_shapes) - set(target_shapes))
  is_encoder = lambda n: n.startswith(("encoder/", "encoders/"))
  stray = [n for n in report["new"] if is_encoder(n)]
  if stray and any(is_encoder(n) for n in saved_shapes):
    raise UserError(
        f"config.init_from: the checkpoint's encoder is laid out differently ({len(stray)} "
        f"encoder parameters, e.g. {stray[0]}, are not in it): set config.model.size and "
        "config.model.scan_layers and config.model.towers as in pretraining.")
  return report


def restore(path, abstract_params, fresh_params):
  """(params, report): `fresh_params` (an initialized nnx.State) with every parameter that the
  checkpoint at `path` has put in its place, as `match` says. `abstract_params` gives the shapes
  and shardings to read into."""
  directory = step_dir(path)
  saved = checkpoint_shapes(directory)
  target = _flatten(abstract_params)
  report = match({k: v.shape for k, v in target.items()}, saved)
  report["checkpoint"] = directory
  wanted = set(report["loaded"]) | set(report["resized"])

  # Read only the wanted leaves, each into its sharding (resized ones at their saved shape, on
  # the same sharding's mesh, replicated: position tables are small).
  def abstract_leaf(name, leaf):
    if name in report["loaded"]:
      return leaf
    sharding = leaf.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
      sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(saved[name], leaf.dtype, sharding=sharding)

  nested, raw = {}, _raw_paths(abstract_params)
  for name in sorted(wanted):
    node = nested
    *parents, last = raw[name]
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = abstract_leaf(name, target[name])
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, dtype=x.dtype,
                                                             global_shape=x.shape), nested)
  restored = ocp.PyTreeCheckpointer().restore(
      os.path.join(directory, STATE_ITEM),
      args=ocp.args.PyTreeRestore(item={"params": nested},
                                  restore_args={"params": restore_args},
                                  partial_restore=True))["params"]
  values = _flatten(restored)

  def merged(path, fresh):
    name = param_names.name(path)
    if name not in values:
      return fresh
    value = values[name]
    if name in report["resized"]:
      value = jax.device_put(resize(value, fresh.shape), fresh.sharding)
    return value

  params = jax.tree_util.tree_map_with_path(merged, fresh_params)
  report["resized"] = [f"{n}: {list(saved[n])} -> {list(target[n].shape)}"
                       for n in report["resized"]]
  return params, report


def restore_imported(spec, abstract_params, fresh_params, model_cfg, info):
  """(params, report) as `restore` gives them, from a public checkpoint (config.init_from
  'hf:<folder>', mmjax.interop): converted to mmjax's names and layout, checked against the
  config, then each loaded parameter placed in its sharding. The report's `notes` say what the
  conversion chose (e.g. the first text_len of the checkpoint's positions)."""
  from mmjax import interop  # pylint: disable=g-import-not-at-top
  target = _flatten(abstract_params)
  shapes = {k: tuple(v.shape) for k, v in target.items()}
  values, notes = interop.load(spec, model_cfg, info, shapes)
  report = match(shapes, {k: v.shape for k, v in values.items()})
  if report["resized"]:  # A converter gives exact shapes; anything else is a config mismatch.
    raise UserError(f"config.init_from={spec}: other shapes than the model's for "
                    f"{report['resized']}.")
  report["checkpoint"], report["notes"] = spec, notes
  loaded = set(report["loaded"])

  def merged(path, fresh):
    name = param_names.name(path)
    if name not in loaded:
      return fresh
    return jax.device_put(values[name].astype(fresh.dtype), fresh.sharding)

  return jax.tree_util.tree_map_with_path(merged, fresh_params), report


def summary(report):
  """A few lines for the log: counts, and the names that are not simply loaded."""
  lines = [f"init_from {report['checkpoint']}: {len(report['loaded'])} parameters loaded, "
           f"{len(report['resized'])} resized, {len(report['new'])} new, "
           f"{len(report['unused'])} in the checkpoint but unused."]
  for key in ("resized", "new"):
    lines += [f"  {key}: {name}" for name in report[key]]
  lines += [f"  note: {note}" for note in report.get("notes", ())]
  unused_roots = sorted({n.split("/")[0] for n in report["unused"]})
  if unused_roots:
    lines.append(f"  unused: {', '.join(unused_roots)} (and their parameters)")
  return "\n".join(lines)


def write(report, workdir):
  """Saves the whole report as WORKDIR/init_from.json."""
  with open(os.path.join(workdir, "init_from.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)

