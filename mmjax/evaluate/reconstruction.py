"""MAE reconstructions as a picture: for a few images, original | masked | reconstructed.

cfg: split, num_images, modality (default: the first of the dataset's modalities that are
pictures, Modality.pictures: image; it needs a masked-modeling objective in config.objectives).
"""
import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmjax import modality as modality_lib
from mmjax import objectives
from mmjax.data import loader
from mmjax.errors import NotApplicable
from mmjax.errors import UserError
from mmjax.objectives import masked_modeling
from mmjax.parallel import distributed
from mmjax.parallel import mesh as mesh_lib

_UPSCALE = 16  # 8x8 digits are too small to see at 1:1.
_BORDER = 2


def _to_uint8(images_bhwc):
  """Model pixel space [-1, 1] -> uint8."""
  return np.asarray(np.clip((images_bhwc + 1.0) * 127.5, 0, 255), np.uint8)


class Evaluator:
  """Writes images/<name>_<step>.png and reports the masked-patch error of those images."""

  def __init__(self, cfg, *, name, config, info, mesh):
    self.cfg, self.name, self.config, self.info, self.mesh = cfg, name, config, info, mesh
    pictures = [m for m in info.evaluated() if modality_lib.get(m).pictures]
    self.modality = cfg.get("modality") or next(iter(pictures), None)
    if self.modality not in pictures:
      raise NotApplicable(f"config.evals.{name} (reconstruction) shows pictures of data.name="
                          f"{info.name!r}, which has {list(info.evaluated())}: remove it, "
                          "or evaluate on a dataset with images.")
    masked = [n for n in config.objectives if objectives.modality(n) == self.modality]
    if not masked:
      raise UserError(f"config.evals.{name} (reconstruction) needs a masked-modeling objective "
                      f"of {self.modality!r} in config.objectives.")
    self.objective = config.objectives[masked[0]]
    self._keys = tuple(modality_lib.get(self.modality).dtypes)
    self._forward = None
    self._batch_axes, self._batch_size = mesh_lib.eval_batch(cfg.num_images, mesh,
                                                                config.parallel.rules)

  def _pictures(self, model, batch):
    obj, m = self.objective, self.modality
    out = model(batch, key=jax.random.key(0), mask_ratios={m: obj.mask_ratio},
                embeddings=None)[m]
    target, pred, masked = out["target"], out["pred"], out["loss_mask"][..., None]
    if obj.norm_targets:  # The head predicts normalized patches: undo with each patch's stats.
      mean, std = masked_modeling.patch_stats(target, obj)
      pred = pred * std + mean
    shown = jnp.where(masked, 0.0, target)  # Hidden patches shown as mid-grey.
    mixed = jnp.where(masked, pred, target)  # MAE convention: visible patches pasted back.
    mse = (jnp.square(pred - target) * masked).sum() / jnp.maximum(masked.sum() * target.shape[-1], 1)
    return [model.tokenizers[m].unpatchify(x) for x in (target, shown, mixed)], mse

  def run(self, model, step, writer):
    graphdef, state = nnx.split(model)
    if self._forward is None:
      self._forward = jax.jit(lambda s, b: self._pictures(nnx.merge(graphdef, s), b),
                              out_shardings=mesh_lib.replicated(self.mesh))
    batch = next(loader.split_batches(self.config.data, self.info, self.cfg.split,
                                      self._batch_size))
    batch = {k: v for k, v in batch.items() if k in self._keys}
    # Every process reads the same batch; the outputs come back replicated, so complete on each.
    columns, mse = jax.device_get(
        self._forward(state, distributed.global_batch_from_full(batch, self.mesh,
                                                                self._batch_axes)))
    n = self.cfg.num_images
    tiles = np.stack([_to_uint8(c[:n]) for c in columns])  # [col, row, h, w, c]
    tiles = tiles.repeat(_UPSCALE, axis=2).repeat(_UPSCALE, axis=3)
    # A white frame around each tile, so neighbouring digits do not run together.
    tiles = np.pad(tiles, ((0, 0), (0, 0), (_BORDER,) * 2, (_BORDER,) * 2, (0, 0)),
                   constant_values=255)
    grid = einops.rearrange(tiles, "col row h w c -> (row h) (col w) c")
    writer.write_png(step, self.name, grid)
    return {f"eval/{self.name}/masked_mse": float(mse)}
