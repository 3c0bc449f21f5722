"""The pretraining model's heads (mmjax.models.mmt): the MAE-style decoder of masked modeling
and the projections of the contrastive embeddings."""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import posemb
from mmjax.models.transformer import EMBED_INIT, Arch, Stack, layer_norm, linear, partitioned
from mmjax.models import masking


class Projection(nnx.Module):
  """Pooled encoder output -> LayerNorm (unless norm=False: CLIP) -> Linear -> L2-normalized
  f32[B, E]."""

  def __init__(self, width, embed_dim, *, dtype, rngs, eps=1e-6, norm=True):
    self.norm = layer_norm(width, dtype=dtype, rngs=rngs, eps=eps) if norm else None
    self.proj = linear(width, embed_dim, ("embed", None), dtype=dtype, rngs=rngs)

  def __call__(self, pooled_bd):
    if self.norm is not None:
      pooled_bd = self.norm(pooled_bd)
    z_be = self.proj(pooled_bd).astype(jnp.float32)
    return z_be * jax.lax.rsqrt(jnp.maximum(jnp.square(z_be).sum(-1, keepdims=True), 1e-12))


class Decoder(nnx.Module):
  """MAE-style light decoder shared by all modalities: fills hidden positions with a learned mask
  token, adds fixed sin-cos positions and a modality-type vector, and predicts with one output
  head per modality."""

  def __init__(self, widths, size, outputs, *, dtype, rngs, scan=False, remat="none",
               arch=Arch(), learned_pos=None):
    """widths: {modality: its encoder output's width}; outputs: {modality: (features,
    partitioning axis)} of its prediction head; learned_pos: {modality: its token grid} for
    the modalities with a learned position table (an imported MAE's) instead of sin-cos."""
    dw = size.decoder_width
    self.modalities = tuple(widths)
    self.width = dw
    embed = lambda w: linear(w, dw, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    if len(set(widths.values())) == 1:
      self.embed = embed(next(iter(widths.values())))
    else:  # Towers of different widths (CLIP): an input map per modality.
      self.embed = nnx.Dict({m: embed(w) for m, w in widths.items()})
    self.mask_token = nnx.Param(partitioned(EMBED_INIT, "embed")(rngs.params(), (dw,)))
    self.type_embed = nnx.Param(partitioned(EMBED_INIT, None, "embed")(
        rngs.params(), (len(self.modalities), dw)))
    # Pre-LN blocks with the encoder's epsilon and GELU (MAE's decoder mirrors its encoder).
    arch = dataclasses.replace(arch, block="pre_ln")
    self.blocks = Stack(dw, size.decoder_depth, size.decoder_heads, size.decoder_mlp,
                        dtype=dtype, rngs=rngs, scan=scan, remat=remat, arch=arch)
    self.pos = (nnx.Dict({m: nnx.Param(partitioned(EMBED_INIT, *[None] * len(g), "embed")(
        rngs.params(), (*g, dw))) for m, g in learned_pos.items()}) if learned_pos else None)
    self.norm = layer_norm(dw, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
    # outputs: {m: (features, partitioning axis)}.
    self.heads = nnx.Dict({m: linear(dw, outputs[m][0], ("embed", outputs[m][1]), dtype=dtype,
                                     rngs=rngs)
                           for m in self.modalities})

  def fill(self, modality, h_bkd, visible, grid, cls_bd=None):
    """Encoded visible tokens [B, K, width] -> decoder input [B, N, decoder_width], or
    [B, 1 + N, decoder_width] with the encoder's class token output `cls_bd` first (MAE's
    decoder sees it, at position zero)."""
    embed = self.embed_of(modality)
    y = embed(h_bkd)
    mask_token = self.mask_token[...].astype(y.dtype)
    if visible.restore is None:
      y = jnp.where(visible.hidden[..., None], mask_token, y)
    else:
      y = masking.restore_tokens(y, mask_token, visible.restore)
    if self.pos is not None and modality in self.pos:
      pos = self.pos[modality][...].reshape(-1, self.width)
    else:
      pos = posemb.for_grid(grid, self.width)
    type_d = self.type_embed[...][self.modalities.index(modality)].astype(y.dtype)
    y = y + pos.astype(y.dtype) + type_d
    if cls_bd is None:
      return y
    return jnp.concatenate([(embed(cls_bd) + type_d)[:, None], y], axis=1)

  def embed_of(self, modality):
    """The linear map from `modality`'s encoder output to the decoder's width."""
    return self.embed[modality] if isinstance(self.embed, nnx.Dict) else self.embed

  def __call__(self, y_bnd, valid_bn):
    with jax.named_scope("decoder"):
      return self.norm(self.blocks(y_bnd, valid_bn))

  def predict(self, modality, y_bnd):
    return self.heads[modality](y_bnd).astype(jnp.float32)
