"""The multimodal Transformer (model name 'mmt'): modality tokenizers, ONE shared encoder, one
light shared decoder for masked modeling, and pooled projections for contrastive alignment.

Masked modeling hides tokens per modality (mmjax.models.masking) and runs the visible ones
through the encoder either each modality alone (fusion='separate', VATT) or all modalities in
one sequence (fusion='joint', M3AE). Contrastive embeddings come from an extra unmasked pass of
each modality alone ('clean'), or from the masked separate pass ('masked', FLIP: cheaper).

The forward pass holds no RNG state: the masking key is an argument, so the training step is a
plain jit over (graphdef, params).
"""
import itertools
import math
import typing

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from flax import struct

from mmjax import modality as modality_lib
from mmjax.errors import UserError
from mmjax.models import encoding
from mmjax.models import sizes
from mmjax.models.decoder import Decoder, Projection
from mmjax.models.encoding import encoder_of, make_encoders, make_tokenizers, tokenize_present
from mmjax.models.transformer import BLOCKS, GELUS, REMAT_POLICIES, Arch
from mmjax.models import masking

def default_config():
  """The model's own defaults; experiment configs override what they change. Each modality
  with settings (mmjax.modalities: patch sizes, the audio frontend) has its section,
  config.model.<modality>."""
  sections = {m: c for m in modality_lib.names()
              if (c := modality_lib.get(m).model_config()) is not None}
  return ml_collections.ConfigDict(dict(
      name="mmt",
      size="tiny",
      fusion="separate",  # 'separate' (VATT) or 'joint' (M3AE) for masked modeling.
      # 'shared': one encoder for every modality (VATT's modality-agnostic one); 'separate':
      # a tower per modality (CLIP, ImageBind), named encoders/<modality>.
      towers="shared",
      # Modalities with a learned class token before their tokens, modalities encoded with a
      # causal mask (CLIP's text), and the pooling of the encoder output for embeddings and
      # heads: 'mean', 'cls' or 'eot' (the last valid token), or per modality
      # ('image=cls,text=eot'): mmjax.models.encoding.
      cls_token=(), causal=(), pool="mean",
      proj_norm=True,  # A LayerNorm before the contrastive projection (CLIP has none).
      # Modalities whose tokens enter the encoder without the tokenizer's final LayerNorm
      # (ViT and CLIP's text have none; mmjax.models.tokenizers).
      ln_pre_off=(),
      dtype="float32",  # Compute dtype ('bfloat16' on accelerators); parameters stay float32.
      scan_layers=False,  # Scan over stacked blocks: compile time flat in depth.
      remat="none",  # Per block: 'none', 'full' (keep only its input) or 'dots' (matmuls).
      # Overrides of the size's encoder shape (0: the size's own), e.g. for an imported
      # checkpoint (mmjax.models.sizes.of).
      encoder=ml_collections.ConfigDict(dict(width=0, depth=0, num_heads=0, mlp_dim=0)),
      # With towers='separate', one tower's shape over that (0: as above), e.g. CLIP's text:
      # --config.model.tower.text.width=512.
      tower=ml_collections.ConfigDict({m: dict(width=0, depth=0, num_heads=0, mlp_dim=0)
                                       for m in modality_lib.names()}),
      # The masked-modeling decoder's shape over the size's (0: the size's; mlp_dim 0: 4 x
      # width), e.g. an imported MAE's.
      decoder=ml_collections.ConfigDict(dict(width=0, depth=0, num_heads=0, mlp_dim=0)),
      # Block architecture (mmjax.models.transformer.Arch): 'pre_ln' or 'post_ln' (BERT); the
      # LayerNorm epsilon (BERT: 1e-12); GELU 'tanh', 'exact' or 'quick' (OpenAI CLIP).
      block="pre_ln", ln_eps=1e-6, gelu="tanh",
      embed_dim=128,  # Width of the contrastive embeddings.
      logit_scale_init=10.0,  # 1 / temperature.
      logit_bias_init=-10.0,  # SigLIP's bias; unused by InfoNCE.
      **sections,
  ))


def pair_names(modalities):
  """'a_b' for every pair, in canonical modality order: image_text, image_audio, text_audio."""
  ordered = modality_lib.ordered(modalities)
  return [f"{a}_{b}" for a, b in itertools.combinations(ordered, 2)]


def _split(x_bn_, lengths):
  """Splits the token axis into consecutive pieces of the given static lengths."""
  return jnp.split(x_bn_, list(itertools.accumulate(lengths))[:-1], axis=1)


@struct.dataclass
class Passes:
  """What one call ran, for the accounting of useful FLOPs (mmjax.train.mfu.useful_flops):
  tokens {m: bool[B, N]} the real tokens of each tokenized modality; visible {m: bool[B, K]}
  those the masked pass encoded; clean: the modalities encoded again unmasked; embedded: the
  modalities projected to embeddings (static: names, not arrays)."""
  tokens: dict
  visible: dict
  clean: tuple = struct.field(pytree_node=False, default=())
  embedded: tuple = struct.field(pytree_node=False, default=())


class Visible(typing.NamedTuple):
  """What the encoder sees of one modality in the masked pass.

  x: [B, K, D] tokens; valid: bool[B, K] keys the encoder may attend to; hidden: bool[B, N];
  restore: int32[B, N] inverse permutation for dropped tokens, or None when tokens were hidden
  in place (Modality.masks_in_place, text: K == N).
  """
  x: jax.Array
  valid: jax.Array
  hidden: jax.Array
  restore: jax.Array | None


def check_config(config):
  """Raises UserError naming the key for a model config that cannot work (`config.model`)."""
  sizes.get(config.size)  # UserError naming config.model.size for an unknown one.
  for key, allowed in (("fusion", ("separate", "joint")), ("dtype", ("float32", "bfloat16")),
                       ("remat", tuple(REMAT_POLICIES)), ("block", BLOCKS),
                       ("gelu", tuple(GELUS))):
    if config.get(key, allowed[0]) not in allowed:
      raise UserError(f"config.model.{key}={config[key]!r}: use one of {list(allowed)}.")
  groups = {"encoder": config.get("encoder") or {}, "decoder": config.get("decoder") or {}}
  groups |= {f"tower.{m}": v for m, v in (config.get("tower") or {}).items()}
  for where, overrides in groups.items():
    for key in sizes.OVERRIDES:
      if int((overrides or {}).get(key, 0) or 0) < 0:
        raise UserError(f"config.model.{where}.{key}={overrides[key]}: give a positive "
                        f"number, or 0 for size {config.size!r}'s.")
  encoding.check_config(config)
  if not 0 < float(config.get("ln_eps", 1e-6)) < 1:
    raise UserError(f"config.model.ln_eps={config.ln_eps}: give a small positive number.")
  # Each modality's section; whether its patches fit the inputs is known once the dataset is
  # (Modality.token_grid, from validate.check_modalities).
  for m in modality_lib.names():
    if m in config:
      modality_lib.get(m).check_model_config(config[m])


class MultimodalTransformer(nnx.Module):
  """See the module docstring. `info` gives the dataset's modalities and static shapes."""

  def __init__(self, config, info, *, rngs):
    check_config(config)
    size, arch = sizes.of(config), Arch.of(config)
    dtype = jnp.dtype(config.dtype)
    self.modalities = modality_lib.ordered(info.modalities)  # UserError for an unknown one.
    self.fusion, self.causal = config.fusion, tuple(config.get("causal", ()))
    encoding.check_modalities(config, self.modalities)
    self.pools = encoding.pools(config, self.modalities)
    widths = encoding.widths(config, self.modalities)
    self.tokenizers = make_tokenizers(config, self.modalities, info, dtype=dtype, rngs=rngs)
    stack = dict(scan=config.scan_layers, remat=config.remat, arch=arch)
    self.encoder, self.encoders = make_encoders(config, self.modalities, dtype=dtype, rngs=rngs)
    self.pool_heads = encoding.make_pool_heads(config, self.modalities, dtype=dtype, rngs=rngs)
    outputs = {m: (t.out_dim, t.out_axis) for m, t in self.tokenizers.items()}
    learned_pos = {m: t.grid for m, t in self.tokenizers.items()
                   if (config.get(m) or {}).get("decoder_pos_embed") == "learned"}
    self.decoder = Decoder(widths, size, outputs, dtype=dtype, rngs=rngs,
                           learned_pos=learned_pos, **stack)
    self.projections = nnx.Dict({
        m: Projection(widths[m], config.embed_dim, dtype=dtype, rngs=rngs, eps=arch.ln_eps,
                      norm=config.get("proj_norm", True))
        for m in self.modalities})
    # Stored as log so the optimizer works on a scale-free quantity (CLIP).
    self.logit_scale = nnx.Dict({
        p: nnx.Param(jnp.asarray(math.log(config.logit_scale_init), jnp.float32))
        for p in pair_names(self.modalities)})
    self.logit_bias = nnx.Dict({
        p: nnx.Param(jnp.asarray(config.logit_bias_init, jnp.float32))
        for p in pair_names(self.modalities)})

  # -- helpers ----------------------------------------------------------------------------------

  def present(self, batch):
    """The model's modalities that `batch` carries, in canonical order."""
    return tuple(m for m in self.modalities
                 if self.tokenizers[m].input_key in batch)

  def _tokenize(self, modality, batch, **kwargs):
    return tokenize_present(self.tokenizers[modality], modality, batch, **kwargs)

  def _hide(self, modality, tokens, keys_b, ratio, batch):
    """Chooses the visible part of one modality's tokens (row b drawn from keys_b[b]) ->
    (Visible, the tokens of the masked pass)."""
    if modality_lib.get(modality).masks_in_place:
      hidden = masking.hide_valid(keys_b, tokens.hideable(), ratio, tokens.valid)
      keep_bk = restore_bn = None
    else:
      # Valid tokens are kept first: padding is kept only when a row has fewer valid tokens
      # than the encoder sees.
      keep_bk, restore_bn = masking.random_keep(keys_b, tokens.valid.shape[1], ratio,
                                                tokens.valid)
      hidden = masking.hidden_from_restore(restore_bn, keep_bk.shape[1])
    if getattr(self.tokenizers[modality], "stats_from_shown", False):
      # Tokens normalized with per-example statistics (log-mel): these come from the shown
      # tokens alone, or every visible token and target would carry the hidden ones.
      tokens = self._tokenize(modality, batch, shown=tokens.valid & ~hidden)
    if keep_bk is None:
      return Visible(tokens.x, tokens.valid & ~hidden, hidden, None), tokens
    return Visible(masking.gather_tokens(tokens.x, keep_bk),
                   masking.gather_tokens(tokens.valid, keep_bk), hidden, restore_bn), tokens

  def _encode_all(self, visible, tokens):
    """{m: Visible} -> ({m: encoded [B, K, width]}, {m: class token output or None}), per
    modality or as one joint sequence (no class tokens: encoding.check_config)."""
    if self.fusion == "separate":
      both = {m: encoding.encode(self, m, v.x, v.valid, tokens[m].cls)
              for m, v in visible.items()}
      return {m: h for m, (h, _) in both.items()}, {m: c for m, (_, c) in both.items()}
    names = list(visible)
    h = self.encoder(jnp.concatenate([visible[m].x for m in names], axis=1),
                     jnp.concatenate([visible[m].valid for m in names], axis=1))
    return (dict(zip(names, _split(h, [visible[m].x.shape[1] for m in names]))),
            dict.fromkeys(names))

  def _decode_all(self, encoded, visible, tokens, cls_out):
    """-> {m: decoder output [B, N, decoder_width]}, jointly when fusion is joint. A class
    token's output goes through the decoder first (as in MAE) and is dropped after."""
    filled = {m: self.decoder.fill(m, encoded[m], visible[m], tokens[m].grid, cls_out[m])
              for m in encoded}
    if self.fusion == "separate":
      out = {}
      for m, y in filled.items():
        if cls_out[m] is None:
          out[m] = self.decoder(y, tokens[m].valid)
        else:
          valid = jnp.concatenate([jnp.ones_like(tokens[m].valid[:, :1]), tokens[m].valid], 1)
          out[m] = self.decoder(y, valid)[:, 1:]
      return out
    names = list(filled)
    y = self.decoder(jnp.concatenate([filled[m] for m in names], axis=1),
                     jnp.concatenate([tokens[m].valid for m in names], axis=1))
    return dict(zip(names, _split(y, [filled[m].shape[1] for m in names])))

  def _embed_tokens(self, modality, tokens):
    """Unmasked pass of one modality alone -> f32[B, E]."""
    h, cls = encoding.encode(self, modality, tokens.x, tokens.valid, tokens.cls)
    return self.projections[modality](encoding.pool(h, tokens.valid, cls, self.pools[modality],
                                                    self._pool_head(modality)))

  def _pool_head(self, modality):
    return encoding.pool_head(self, modality)

  def _logit_params(self, modalities):
    # No clamp here: it would stop the gradient above the cap. The optimizer clamps the
    # parameter after each update (mmjax.train.optimizer.clamp_logit_scale), as CLIP does.
    pairs = pair_names(modalities)
    return ({p: jnp.exp(self.logit_scale[p][...]) for p in pairs},
            {p: self.logit_bias[p][...].astype(jnp.float32) for p in pairs})

  # -- public API -------------------------------------------------------------------------------

  def __call__(self, batch, *, key, mask_ratios, embeddings="clean"):
    """Masked modeling of the modalities in `mask_ratios` plus contrastive embeddings.

    Args:
      batch: dict with any of image uint8[B,H,W,C]; text_ids int32[B,L], text_mask bool[B,L];
        audio f32[B,T], audio_mask bool[B,T]; and optionally has_<modality> bool[B], False
        for examples without that modality (their tokens are left out everywhere).
      key: PRNG key for the masking; example b draws from key folded with batch['row'][b]
        (its position in the global batch; default arange(B)).
      mask_ratios: {modality: fraction hidden} (Python floats; 0.0 allowed).
      embeddings: 'clean' (extra unmasked pass per modality), 'masked' (pooled from the masked
        separate pass; other present modalities get an unmasked pass), or None.

    Returns:
      {m: {'pred' f32[B,N,P] (text: logits f32[B,L,V]), 'target', 'loss_mask' bool[B,N]}}
      for m in mask_ratios, 'embeddings' {m: f32[B,E]} and 'present' {m: bool[B]} (the
      examples with any valid token of m) unless embeddings is None, and 'logit_scale' /
      'logit_bias' {pair: f32[]} for the pairs of present modalities, and 'passes' (Passes:
      which real tokens went through which part, for mmjax.train.mfu.useful_flops).
    """
    present = self.present(batch)
    missing = [m for m in mask_ratios if m not in present]
    if missing:
      raise UserError(f"Masked modeling of {missing} needs them in the batch, which has "
                      f"{list(present)}.")
    if embeddings not in ("clean", "masked", None):
      raise UserError(f"embeddings={embeddings!r}: use 'clean', 'masked' or None.")
    if embeddings == "masked" and self.fusion == "joint":
      raise UserError("Masked-view embeddings need fusion='separate': in a joint sequence each "
                      "modality's tokens have seen the others.")
    needed = present if embeddings else tuple(m for m in present if m in mask_ratios)
    tokens = {m: self._tokenize(m, batch) for m in needed}

    out, visible = {}, {}
    # Canonical order keeps the joint sequence layout independent of the dict's order.
    masked = [m for m in present if m in mask_ratios]
    if masked:
      # One key per example and modality, from its row in the global batch.
      rows_b = batch.get("row")
      if rows_b is None:
        rows_b = jnp.arange(tokens[masked[0]].valid.shape[0])
      keys_b = masking.row_keys(key, rows_b)
      # Each modality's stream of masks is its place in the registry's order.
      hid = {m: self._hide(m, tokens[m],
                           masking.fold_each(keys_b, modality_lib.names().index(m)),
                           mask_ratios[m], batch)
             for m in masked}
      visible = {m: v for m, (v, _) in hid.items()}
      encoded, cls_out = self._encode_all(visible, tokens)
      decoded = self._decode_all(encoded, visible, tokens, cls_out)
      for m in masked:
        pred = self.decoder.predict(m, decoded[m])
        out[m] = {"pred": pred,
                  "target": hid[m][1].target,
                  "loss_mask": visible[m].hidden & tokens[m].valid}

    if embeddings == "clean":
      out["embeddings"] = {m: self._embed_tokens(m, tokens[m]) for m in present}
    elif embeddings == "masked":
      out["embeddings"] = {
          m: (self.projections[m](encoding.pool(encoded[m], visible[m].valid, cls_out[m],
                                                self.pools[m], self._pool_head(m))) if m in masked
              else self._embed_tokens(m, tokens[m]))
          for m in present}
    if embeddings:
      # An example lacks a modality when none of its tokens is valid (a has_<m> flag False, or
      # audio too short to fill a patch): its constant embedding is kept out of the pairs.
      out["present"] = {m: tokens[m].valid.any(1) for m in present}
    out["logit_scale"], out["logit_bias"] = self._logit_params(present)
    embedded = present if embeddings else ()
    out["passes"] = Passes(tokens={m: t.valid for m, t in tokens.items()},
                           visible={m: v.valid for m, v in visible.items()},
                           clean=tuple(m for m in embedded
                                       if embeddings == "clean" or m not in masked),
                           embedded=tuple(embedded))
    return out

  def embed(self, batch):
    """{m: f32[B, E]} L2-normalized, each present modality alone and unmasked."""
    return {m: self._embed_tokens(m, self._tokenize(m, batch)) for m in self.present(batch)}


MODEL = MultimodalTransformer  # config.model.name="mmt" (mmjax.models).
