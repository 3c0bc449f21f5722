"""How modalities become encoder outputs, for every model that encodes them (mmjax.models.mmt
in pretraining, mmjax.models.classifier in fine-tuning): the tokenizers, the shared encoder or a
tower per modality (config.model.towers), an optional class token, and pooling
(config.model.pool)."""
import jax
import jax.numpy as jnp
from flax import nnx

from mmjax import modality as modality_lib
from mmjax.errors import UserError
from mmjax.modality import presence_key
from mmjax.models import sizes
from mmjax.models.transformer import (EMBED_INIT, XAVIER, ZEROS, Arch, Encoder, Mlp, layer_norm,
                                      partitioned)

POOLS = ("mean", "cls", "eot", "map")


def pools(config, modalities):
  """{modality: how its encoder output is pooled}: config.model.pool is one of POOLS for every
  modality, or per modality, e.g. 'image=cls,text=eot' (CLIP; unnamed ones: 'mean')."""
  spec = config.get("pool", "mean")
  if "=" not in spec:
    return dict.fromkeys(modalities, spec)
  named = dict(part.split("=", 1) for part in spec.split(",") if part)
  return {m: named.get(m, "mean") for m in modalities}


def tokenize_present(tokenizer, modality, batch, **kwargs):
  """Tokens of one modality; an example whose batch['has_<modality>'] is False (a mixture
  entry without it) has no valid tokens: nothing attends to them, no loss counts them.
  kwargs go to the tokenizer (`shown`, for one with stats_from_shown)."""
  with jax.named_scope(f"tokenize_{modality}"):  # Names the ops in profiles.
    tokens = tokenizer(batch, **kwargs)
  has = batch.get(presence_key(modality))
  if has is None:
    return tokens
  return tokens.replace(valid=tokens.valid & has.astype(bool)[:, None])


def masked_mean(x_bnd, valid_bn):
  """f32[B, D] mean over valid tokens (0 for a row without any)."""
  w = valid_bn[..., None].astype(jnp.float32)
  return (x_bnd.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


TOWERS = ("shared", "separate")


def make_encoders(config, modalities, *, dtype, rngs):
  """(shared Encoder, None) or (None, nnx.Dict {m: Encoder}) by config.towers; each tower of
  its shape (sizes.of(config, m))."""
  def make(modality=None):
    size = sizes.of(config, modality)
    return Encoder(size.width, size.depth, size.num_heads, size.mlp_dim, dtype=dtype,
                   rngs=rngs, scan=config.scan_layers, remat=config.remat, arch=Arch.of(config))
  if config.get("towers", "shared") == "separate":
    return None, nnx.Dict({m: make(m) for m in modality_lib.ordered(modalities)})
  return make(), None


def widths(config, modalities):
  """{m: the width of m's tokens and encoder output} (one width unless towers differ)."""
  return {m: sizes.of(config, m).width for m in modality_lib.ordered(modalities)}


def encoder_of(model, modality):  # The shared encoder, or `modality`'s tower.
  return model.encoder if model.encoders is None else model.encoders[modality]


def make_tokenizers(config, modalities, info, *, dtype, rngs):
  """{m: tokenizer} of `modalities` (nnx.Dict), in canonical order: the registry's; each
  gives tokens as wide as its encoder."""
  return nnx.Dict({m: modality_lib.get(m).tokenizer(config, info, width, dtype=dtype, rngs=rngs)
                   for m, width in widths(config, modalities).items()})


def check_config(config):
  """Raises UserError for towers / class token / pooling settings that cannot work."""
  towers, names = config.get("towers", "shared"), modality_lib.names()
  if towers not in TOWERS:
    raise UserError(f"config.model.towers={towers!r}: use one of {list(TOWERS)}.")
  shaped = [m for m in (config.get("tower") or {}) if sizes.tower_overrides(config, m)]
  if shaped and towers != "separate":
    raise UserError(f"config.model.tower.{shaped[0]} sets a tower's shape, but towers="
                    f"{towers!r} has one encoder for every modality: set towers='separate' "
                    "or leave config.model.tower at 0.")
  for m in [None] + shaped:
    size, where = sizes.of(config, m), f"tower.{m}" if m else "encoder"
    if size.width % size.num_heads:
      raise UserError(f"config.model.{where}: width {size.width} is not divisible by "
                      f"num_heads {size.num_heads}.")
  for key in ("ln_pre_off", "cls_token", "causal"):
    value = config.get(key, ())
    if (not isinstance(value, (tuple, list))
        or any(m not in names for m in value)):
      raise UserError(f"config.model.{key}={value!r}: give a tuple of modalities of "
                      f"{list(names)}, e.g. ('image',), or () for none.")
  spec = config.get("pool", "mean")
  parts = [p.split("=", 1) for p in spec.split(",")] if "=" in spec else None
  hows = [p[-1] for p in parts] if parts is not None else [spec]
  if (parts is not None and any(len(p) != 2 or p[0] not in names for p in parts)) or any(
      how not in POOLS for how in hows):
    raise UserError(f"config.model.pool={spec!r}: use one of {list(POOLS)}, or one per "
                    "modality, e.g. 'image=cls,text=eot'.")
  if config.fusion == "joint" and (towers == "separate" or config.get("cls_token", ())
                                   or config.get("causal", ())):
    raise UserError("config.model.fusion='joint' encodes all modalities as one sequence with the "
                    "shared encoder: set towers='shared', cls_token=(), causal=().")


def check_modalities(config, modalities):
  """UserError when a modality of the model is pooled by a class token it does not have."""
  lacking = [m for m, how in pools(config, modalities).items()
             if how == "cls" and m not in config.get("cls_token", ())]
  if lacking:
    raise UserError(f"config.model.pool={config.get('pool')!r} pools the class token of "
                    f"{lacking}: add them to config.model.cls_token.")


class MAPHead(nnx.Module):
  """Multihead attention pooling (SigLIP's vision head): a learned probe attends to the valid
  tokens, then a pre-LN MLP with a residual: [B, N, D] -> f32[B, D]."""

  def __init__(self, width, num_heads, mlp_dim, *, dtype, rngs, arch=Arch()):
    head_dim = width // num_heads
    self.probe = nnx.Param(partitioned(EMBED_INIT, "embed")(rngs.params(), (width,)))
    self.q = nnx.LinearGeneral(width, (num_heads, head_dim), dtype=dtype,
                               kernel_init=partitioned(XAVIER, "embed", "heads", "kv"),
                               bias_init=partitioned(ZEROS, "heads", "kv"), rngs=rngs)
    self.kv = nnx.LinearGeneral(width, (2, num_heads, head_dim), dtype=dtype,
                                kernel_init=partitioned(XAVIER, "embed", None, "heads", "kv"),
                                bias_init=partitioned(ZEROS, None, "heads", "kv"), rngs=rngs)
    self.out = nnx.LinearGeneral((num_heads, head_dim), width, axis=(-2, -1), dtype=dtype,
                                 kernel_init=partitioned(XAVIER, "heads", "kv", "embed"),
                                 bias_init=partitioned(ZEROS, "embed"), rngs=rngs)
    self.norm = layer_norm(width, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
    self.mlp = Mlp(width, mlp_dim, dtype=dtype, rngs=rngs, gelu=arch.gelu)

  def __call__(self, x_bnd, valid_bn):
    b = x_bnd.shape[0]
    q = jnp.broadcast_to(self.q(self.probe[...].astype(x_bnd.dtype)), (b, 1) + self.q.out_features)
    kv = self.kv(x_bnd)
    y = jax.nn.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1],
                                     mask=valid_bn[:, None, None, :])
    y = self.out(y[:, 0])
    return (y + self.mlp(self.norm(y))).astype(jnp.float32)


def make_pool_heads(config, modalities, *, dtype, rngs):
  """{m: MAPHead} (nnx.Dict) of the modalities pooled by 'map', or None when there are none."""
  def make(m):
    size = sizes.of(config, m)
    return MAPHead(size.width, size.num_heads, size.mlp_dim, dtype=dtype, rngs=rngs,
                   arch=Arch.of(config))
  heads = {m: make(m) for m, how in pools(config, modalities).items() if how == "map"}
  return nnx.Dict(heads) if heads else None


def pool_head(model, modality):
  """`modality`'s MAPHead in `model`, or None."""
  heads = model.pool_heads
  return heads[modality] if heads is not None and modality in heads else None


def encode(model, modality, x_bnd, valid_bn, cls_b1d=None):
  """(encoded tokens [B, N, D], the class token's output [B, D] or None): `modality`'s tokens
  through its encoder (causally for the modalities in model.causal), the class token
  (Tokens.cls) first when there is one."""
  encoder = encoder_of(model, modality)
  causal = modality in model.causal
  if cls_b1d is None:
    return encoder(x_bnd, valid_bn, causal), None
  b = x_bnd.shape[0]
  x = jnp.concatenate([jnp.broadcast_to(cls_b1d, (b, 1, x_bnd.shape[-1])).astype(x_bnd.dtype),
                       x_bnd], axis=1)
  valid = jnp.concatenate([jnp.ones((b, 1), bool), valid_bn], axis=1)
  h = encoder(x, valid, causal)
  return h[:, 1:], h[:, 0]


def pool(h_bnd, valid_bn, cls_bd, how, head=None):
  """f32[B, D]: the mean of the valid tokens ('mean'; the class token left out), the class
  token's output ('cls'), the last valid token's ('eot': CLIP's end of text) or a learned
  attention pooling ('map', `head`: SigLIP's vision)."""
  if how == "map":
    return head(h_bnd, valid_bn)
  if how == "cls":
    return cls_bd.astype(jnp.float32)
  if how == "eot":
    last_b = jnp.maximum(valid_bn.sum(1) - 1, 0)
    return jnp.take_along_axis(h_bnd, last_b[:, None, None], axis=1)[:, 0].astype(jnp.float32)
  return masked_mean(h_bnd, valid_bn)
