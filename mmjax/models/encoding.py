"""How modalities become encoder outputs, for every model that encodes them (mmjax.models.mmt
in pretraining, mmjax.models.classifier in fine-tuning): the tokenizers, the shared encoder or a
tower per modality (config.model.towers), an optional class token, and pooling
(config.model.pool)."""
import jax
import jax.numpy as jnp
from flax import nnx

from mmjax import modalities as modality_lib
from mmjax.errors import UserError
from mmjax.modalities import presence_key
from mmjax.models import sizes
from mmjax.models.transformer import Arch, Encoder

POOLS = ("mean", "cls")


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
  """(shared Encoder, None) or (None, nnx.Dict {m: Encoder}) by config.towers."""
  size = sizes.of(config)
  make = lambda: Encoder(size.width, size.depth, size.num_heads, size.mlp_dim, dtype=dtype,
                         rngs=rngs, scan=config.scan_layers, remat=config.remat,
                         arch=Arch.of(config))
  if config.get("towers", "shared") == "separate":
    return None, nnx.Dict({m: make() for m in modality_lib.ordered(modalities)})
  return make(), None


def encoder_of(model, modality):  # The shared encoder, or `modality`'s tower.
  return model.encoder if model.encoders is None else model.encoders[modality]


def make_tokenizers(config, modalities, info, width, *, dtype, rngs):
  """{m: tokenizer} of `modalities` (nnx.Dict), in canonical order: the registry's."""
  return nnx.Dict({m: modality_lib.get(m).tokenizer(config, info, width, dtype=dtype, rngs=rngs)
                   for m in modality_lib.ordered(modalities)})




def check_config(config):
  """Raises UserError for towers / class token / pooling settings that cannot work."""
  towers, pool = config.get("towers", "shared"), config.get("pool", "mean")
  if towers not in TOWERS:
    raise UserError(f"config.model.towers={towers!r}: use one of {list(TOWERS)}.")
  if pool not in POOLS:
    raise UserError(f"config.model.pool={pool!r}: use one of {list(POOLS)}.")
  unknown = [m for m in config.get("ln_pre_off", ()) if m not in modality_lib.names()]
  if unknown:
    raise UserError(f"config.model.ln_pre_off names {unknown}: use modalities of "
                    f"{list(modality_lib.names())}.")
  if pool == "cls" and not config.get("cls_token", False):
    raise UserError("config.model.pool='cls' pools the class token: set "
                    "config.model.cls_token=True.")
  if config.fusion == "joint" and (towers == "separate" or config.get("cls_token", False)):
    raise UserError("config.model.fusion='joint' encodes all modalities as one sequence with the "
                    "shared encoder and no class token: set towers='shared', cls_token=False.")


def encode(model, modality, x_bnd, valid_bn, cls_b1d=None):
  """(encoded tokens [B, N, D], the class token's output [B, D] or None): `modality`'s tokens
  through its encoder, the class token (Tokens.cls) first when there is one."""
  encoder = encoder_of(model, modality)
  if cls_b1d is None:
    return encoder(x_bnd, valid_bn), None
  b = x_bnd.shape[0]
  x = jnp.concatenate([jnp.broadcast_to(cls_b1d, (b, 1, x_bnd.shape[-1])).astype(x_bnd.dtype),
                       x_bnd], axis=1)
  valid = jnp.concatenate([jnp.ones((b, 1), bool), valid_bn], axis=1)
  h = encoder(x, valid)
  return h[:, 1:], h[:, 0]


def pool(h_bnd, valid_bn, cls_bd, how):
  """f32[B, D]: the mean of the valid tokens ('mean'; the class token left out) or the class
  token's output ('cls')."""
  if how == "cls":
    return cls_bd.astype(jnp.float32)
  return masked_mean(h_bnd, valid_bn)
