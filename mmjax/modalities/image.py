"""Images: uint8[B, H, W, C] batches, p x p patch tokens with 2-D sin-cos positions (ViT/MAE),
masked image modeling (objective masked_image) regressing the hidden patches' pixels."""
import io
import os

import ml_collections
import numpy as np

from mmjax import modality
from mmjax.data import ops
from mmjax.errors import UserError
from mmjax.models import tokenizers


def read_image(path, size, channels, max_pixels):
  """(PNG bytes, format it was read as) of the image at `path`: shorter side resized to
  `size`, centre crop, `channels` 1 (grey) or 3 (RGB). Its size is checked from the header,
  before decoding: over `max_pixels` pixels is a BadExample."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path)
  # PIL's own limit only warns below twice its value: ours replaces it.
  pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
  try:
    with Image.open(path) as image:
      (w, h), image_format = image.size, image.format
      if w * h > max_pixels:
        raise ops.BadExample(f"image {name!r} is {w}x{h}, {w * h} pixels, over "
                             f"--max_image_pixels={max_pixels}")
      if not w * h:
        raise ops.BadExample(f"image {name!r} is {w}x{h}, empty")
      # The resized image before the crop: bounded too, for extreme aspect ratios.
      scale = size / min(w, h)
      w, h = max(size, round(w * scale)), max(size, round(h * scale))
      if w * h > max(max_pixels, size * size):
        raise ops.BadExample(f"image {name!r} is {image.width}x{image.height}: resized to "
                             f"{w}x{h} before the centre crop, over "
                             f"--max_image_pixels={max_pixels}")
      image = image.convert("L" if channels == 1 else "RGB")
  except ops.BadExample:
    raise
  except Exception as e:  # PIL raises several types for broken files.
    raise ops.BadExample(f"image {name!r} does not decode ({e})") from None
  finally:
    Image.MAX_IMAGE_PIXELS = pil_limit
  image = image.resize((w, h), Image.Resampling.BICUBIC)
  left, top = (w - size) // 2, (h - size) // 2
  buf = io.BytesIO()
  image.crop((left, top, left + size, top + size)).save(buf, format="PNG")
  return buf.getvalue(), image_format


class Image(modality.Modality):
  """An image modality; `name` and `channels` (None: the stored ones; or 1, 3) make others
  of the same kind (a depth map: Image("depth", channels=1))."""

  pictures = True

  def __init__(self, name="image", channels=None):
    self.name = self.feature = name
    self.dtypes = {name: np.uint8}
    self.channels = channels

  def example_shapes(self, size):
    return {self.name: tuple(size)}

  def stored_shapes(self, data_cfg, features):
    shape = tuple(features[self.feature].shape)
    if None in shape[:2] and not (data_cfg.pp_train and data_cfg.pp_eval):
      raise UserError(f"{data_cfg.name}: {self.name}s of varying size {shape}; give "
                      "data.pp_train and data.pp_eval with a resize (e.g. \"decode|resize(32)|"
                      "...\"), or build the dataset at a fixed size.")
    return {self.name: shape}

  def default_pp(self, data_cfg, shapes, *, train):
    del data_cfg, train
    return [f"decode(key={self.name!r}, channels={shapes[self.name][-1] or 3})"]

  def build_features(self, opts):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    channels = self.channels or opts.channels
    return {self.feature: tfds.features.Image(shape=(opts.image_size, opts.image_size,
                                                     channels))}

  def read(self, value, opts):
    from PIL import Image as pil  # pylint: disable=g-import-not-at-top
    png, image_format = read_image(value, opts.image_size, self.channels or opts.channels,
                                   opts.max_image_pixels)
    return {self.feature: png}, modality.extension_note(self.name, value, pil.registered_extensions(),
                                               image_format)

  def model_config(self):
    # pos_embed: fixed 2-D 'sincos' positions, or a 'learned' [rows, cols, width] table (ViT,
    # CLIP), interpolated to a new grid by init_from; decoder_pos_embed: the same for the
    # masked-modeling decoder (an imported MAE's, whose sin-cos channels are laid out otherwise).
    return ml_collections.ConfigDict(dict(patch_size=2, pos_embed="sincos",
                                          decoder_pos_embed="sincos"))

  def check_model_config(self, cfg):
    if not isinstance(cfg.patch_size, int) or cfg.patch_size <= 0:
      raise UserError(f"config.model.{self.name}.patch_size={cfg.patch_size!r}: must be a "
                      "positive integer.")
    for key in ("pos_embed", "decoder_pos_embed"):
      if cfg.get(key, "sincos") not in ("sincos", "learned"):
        raise UserError(f"config.model.{self.name}.{key}={cfg[key]!r}: use 'sincos' or "
                        "'learned'.")

  def token_grid(self, model_cfg, info):
    return tokenizers.image_grid(info.shapes[self.name], model_cfg[self.name].patch_size,
                                 f"config.model.{self.name}.patch_size")

  def out_dim(self, model_cfg, info):
    return model_cfg[self.name].patch_size ** 2 * info.shapes[self.name][-1]

  def tokenizer(self, model_cfg, info, width, *, dtype, rngs):
    return tokenizers.ImagePatchTokenizer(tuple(info.shapes[self.name]),
                                          model_cfg[self.name].patch_size, width, dtype=dtype,
                                          rngs=rngs, input_key=self.name,
                                          pos_embed=model_cfg[self.name].get("pos_embed",
                                                                             "sincos"),
                                          **tokenizers.settings(model_cfg, self.name))


MODALITY = Image()
MODALITY.order = 0  # Canonical order: image, text, audio (mmjax.modality).
