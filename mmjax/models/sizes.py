"""The one size table: encoder and decoder shapes by name, from `tiny` (tests, demo) to `H`.

A model config may override the encoder's shape (config.model.encoder.width, depth, num_heads,
mlp_dim; 0 keeps the size's), to match a public checkpoint (e.g. all-MiniLM-L6: S's width,
6 layers, 12 heads), and with a tower per modality (config.model.towers='separate') one tower's
shape on top (config.model.tower.<modality>.width, ...: CLIP's text tower is narrower than its
image tower), and the decoder's (config.model.decoder.width, depth, num_heads, mlp_dim: an
imported MAE's). `of(config.model, modality)` is the shape a model config builds.

S/B/L/H follow ViT/MAE. The decoder only has to fill in masked tokens, so it stays light
(MAE: 512 wide, 8 deep for every encoder size; S gets a narrower one to stay below its encoder).
"""
import dataclasses

from mmjax import registry


@dataclasses.dataclass(frozen=True)
class Size:
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  decoder_mlp_dim: int = 0  # 0: 4 x decoder_width.

  @property
  def decoder_mlp(self):
    return self.decoder_mlp_dim or 4 * self.decoder_width


SIZES = {
    "tiny": Size(width=128, depth=4, num_heads=4, mlp_dim=512,
                 decoder_width=128, decoder_depth=1, decoder_heads=4),
    "S": Size(width=384, depth=12, num_heads=6, mlp_dim=1536,
              decoder_width=256, decoder_depth=4, decoder_heads=8),
    "B": Size(width=768, depth=12, num_heads=12, mlp_dim=3072,
              decoder_width=512, decoder_depth=8, decoder_heads=16),
    "L": Size(width=1024, depth=24, num_heads=16, mlp_dim=4096,
              decoder_width=512, decoder_depth=8, decoder_heads=16),
    "H": Size(width=1280, depth=32, num_heads=16, mlp_dim=5120,
              decoder_width=512, decoder_depth=8, decoder_heads=16),
}


# The sizes by name (mmjax.registry): register(name, Size(...)) adds one.
REGISTRY = registry.Registry("model size", builtins=SIZES)
register, unregister, names = REGISTRY.register, REGISTRY.unregister, REGISTRY.names


def get(size_name):
  """The Size called `size_name` (config.model.size)."""
  return REGISTRY.get(size_name, key="config.model.size")


OVERRIDES = ("width", "depth", "num_heads", "mlp_dim")
# config.model.decoder's overrides -> the Size's fields (an imported MAE's decoder shape).
DECODER = {"width": "decoder_width", "depth": "decoder_depth", "num_heads": "decoder_heads",
           "mlp_dim": "decoder_mlp_dim"}


def _set(overrides):
  return {k: int(overrides[k]) for k in OVERRIDES if int(overrides.get(k, 0) or 0) > 0}


def tower_overrides(model_cfg, modality):
  """{key: value} of the OVERRIDES that config.model.tower.<modality> sets (positive)."""
  towers = model_cfg.get("tower") or {}
  return _set(towers.get(modality) or {}) if modality in towers else {}


def of(model_cfg, modality=None):
  """The Size a model config builds (for `modality`'s tower, when given): config.model.size's,
  with any of OVERRIDES that config.model.encoder sets to a positive number in its place, then
  any that config.model.tower.<modality> sets."""
  changes = _set(model_cfg.get("encoder") or {})
  if modality is not None:
    changes |= tower_overrides(model_cfg, modality)
  changes |= {DECODER[k]: v for k, v in _set(model_cfg.get("decoder") or {}).items()}
  return dataclasses.replace(get(model_cfg.size), **changes)
