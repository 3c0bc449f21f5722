"""The fine-tuning model (model name 'classifier'): the pretrained model's modality tokenizers
and shared encoder, pooled, and a new classification head.

Its parameters are named as in the multimodal Transformer (`tokenizers/<m>/...`,
`encoder/...`), so a pretraining checkpoint restores into it by name (mmjax.train.init_from);
only `head` is new. The decoder, projections and logit scales of pretraining are not used.

Inputs (config.model.inputs): one modality, or several fused, either each encoded alone and
their pooled features averaged ('separate', as the contrastive embeddings were trained), or as
one joint sequence ('joint', as masked modeling with fusion='joint' was trained).
"""
import jax.numpy as jnp
from flax import nnx

from mmjax import modality as modality_lib
from mmjax.errors import UserError
from mmjax.modality import presence_key
from mmjax.models import encoding
from mmjax.models import mmt
from mmjax.models.transformer import ZEROS, Arch, layer_norm, partitioned


def check_config(config, info):
  """Raises UserError naming the key for a classifier config that cannot work."""
  mmt.check_config(config)
  inputs = tuple(config.inputs)
  if not inputs or any(m not in modality_lib.names() for m in inputs):
    raise UserError(f"config.model.inputs={list(inputs)}: name one or more of "
                    f"{list(modality_lib.names())}.")
  missing = [m for m in inputs if m not in info.modalities]
  if missing:
    raise UserError(f"config.model.inputs asks for {missing}, but dataset {info.name!r} has "
                    f"{list(info.modalities)}.")
  if not info.num_classes:
    raise UserError(f"Dataset {info.name!r} has no class labels to fine-tune on.")
  widths = encoding.widths(config, inputs)
  if len(set(widths.values())) > 1:
    raise UserError(f"config.model.inputs={list(inputs)} have towers of different widths "
                    f"{widths}: their pooled features cannot be averaged; fine-tune on one.")


class Classifier(nnx.Module):
  """Tokenizers + encoder (restorable from pretraining) + a LayerNorm/Linear head."""
  classifies = True  # Outputs {'classification': ...} (mmjax.models.classifies).

  def __init__(self, config, info, *, rngs):
    check_config(config, info)
    arch = Arch.of(config)
    dtype = jnp.dtype(config.dtype)
    self.inputs = modality_lib.ordered(config.inputs)
    self.fusion, self.causal = config.fusion, tuple(config.get("causal", ()))
    encoding.check_modalities(config, self.inputs)
    self.pools = encoding.pools(config, self.inputs)
    self.tokenizers = encoding.make_tokenizers(config, self.inputs, info, dtype=dtype, rngs=rngs)
    width = encoding.widths(config, self.inputs)[self.inputs[0]]
    self.encoder, self.encoders = encoding.make_encoders(config, self.inputs, dtype=dtype, rngs=rngs)
    self.pool_heads = encoding.make_pool_heads(config, self.inputs, dtype=dtype, rngs=rngs)
    self.head_norm = layer_norm(width, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
    # Zero-initialized head (as in MAE / BEiT fine-tuning): training starts from uniform logits.
    self.head = nnx.Linear(width, info.num_classes, dtype=dtype,
                           kernel_init=partitioned(ZEROS, "embed", None),
                           bias_init=partitioned(ZEROS, None), rngs=rngs)

  def features(self, batch):
    """f32[B, width]: the pooled encoder output of the inputs (an example's missing modalities,
    has_<modality> False, are left out)."""
    b = batch["label"].shape[0]
    has = {m: batch.get(presence_key(m), jnp.ones((b,), bool)).astype(bool) for m in self.inputs}
    tokens = {m: encoding.tokenize_present(self.tokenizers[m], m, batch) for m in self.inputs}
    if self.fusion == "joint" and len(tokens) > 1:  # Shared encoder, no class token.
      x = jnp.concatenate([t.x for t in tokens.values()], axis=1)
      valid = jnp.concatenate([t.valid for t in tokens.values()], axis=1)
      return encoding.masked_mean(self.encoder(x, valid), valid)
    total, count = 0.0, 0.0
    for m, t in tokens.items():
      w = has[m][:, None].astype(jnp.float32)
      h, cls = encoding.encode(self, m, t.x, t.valid, t.cls)
      total += w * encoding.pool(h, t.valid, cls, self.pools[m],
                                 encoding.pool_head(self, m))
      count += w
    return total / jnp.maximum(count, 1.0)

  def __call__(self, batch, *, key=None, mask_ratios=None, embeddings=None):
    """{'classification': {'logits' f32[B, classes], 'labels' int32[B]}}. (The keyword
    arguments of the pretraining model's call are accepted and unused: no masking here.)"""
    del key, mask_ratios, embeddings
    logits = self.head(self.head_norm(self.features(batch))).astype(jnp.float32)
    return {"classification": {"logits": logits, "labels": batch["label"]}}


MODEL = Classifier  # config.model.name="classifier" (mmjax.models).
