"""The one size table: encoder and decoder shapes by name, from `tiny` (tests, demo) to `H`.

A model config may override the encoder's shape (config.model.encoder.width, depth, num_heads,
mlp_dim; 0 keeps the size's), to match a public checkpoint (e.g. all-MiniLM-L6: S's width,
6 layers, 12 heads): `of(config.model)` is the shape a model config builds.

S/B/L/H follow ViT/MAE. The decoder only has to fill in masked tokens, so it stays light
(MAE: 512 wide, 8 deep for every encoder size; S gets a narrower one to stay below its encoder).
"""
import dataclasses

from mmjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Size:
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  decoder_width: int
  decoder_depth: int
  decoder_heads: int


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


def get(size_name):
  """Returns the Size called `size_name` (a key of SIZES)."""
  if size_name not in SIZES:
    raise UserError(f"Unknown model size {size_name!r}: choose one of {list(SIZES)} "
                    "(config.model.size).")
  return SIZES[size_name]


OVERRIDES = ("width", "depth", "num_heads", "mlp_dim")


def of(model_cfg):
  """The Size a model config builds: config.model.size's, with any of OVERRIDES that
  config.model.encoder sets to a positive number in its place."""
  size = get(model_cfg.size)
  encoder = model_cfg.get("encoder") or {}
  changes = {k: int(encoder[k]) for k in OVERRIDES if int(encoder.get(k, 0) or 0) > 0}
  return dataclasses.replace(size, **changes)
