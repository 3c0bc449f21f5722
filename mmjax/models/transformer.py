"""Transformer blocks and the encoder stack shared by every modality.

Blocks are pre-LN (ViT, CLIP: mmjax's default) or post-LN (BERT), with the LayerNorm epsilon
and GELU variant of the architecture they reproduce (`Arch`, from config.model), so that public
checkpoints load exactly (mmjax.interop).

Every parameter carries logical axis names ('embed', 'mlp', 'heads', 'kv', ...) that
mmjax.parallel maps to mesh axes. Names are metadata only (eager_sharding=False): the trainer
creates parameters under jit with out_shardings derived from these names, so building a model
needs no mesh, and the same model can be placed on any mesh. Activations between blocks are
constrained to ('batch', 'length', 'act_embed') the same way.

A Stack of blocks can be scanned (one compiled block whatever the depth: parameters stacked on
a leading 'layers' axis) and rematerialized per block (recomputed in the backward pass instead
of stored), by the model config's `scan_layers` and `remat`.
"""
import dataclasses
import functools

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.parallel import sharding

XAVIER = nnx.initializers.xavier_uniform()
ZEROS = nnx.initializers.zeros_init()
ONES = nnx.initializers.ones_init()
EMBED_INIT = nnx.initializers.normal(stddev=0.02)


def partitioned(init, *names):
  """`init` whose variables carry logical axis `names` (one per dimension)."""
  return nnx.with_partitioning(init, names, eager_sharding=False)


# config.model.gelu: the tanh approximation (mmjax's default, jax.nn.gelu's), the exact erf form
# (BERT, ViT, SigLIP) and OpenAI CLIP's x * sigmoid(1.702 x).
GELUS = {"tanh": functools.partial(jax.nn.gelu, approximate=True),
         "exact": functools.partial(jax.nn.gelu, approximate=False),
         "quick": lambda x: x * jax.nn.sigmoid(1.702 * x)}
BLOCKS = ("pre_ln", "post_ln")
LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Arch:
  """How blocks are built: 'pre_ln' (x + f(LN(x)), then a final LayerNorm) or 'post_ln'
  (LN(x + f(x)), BERT: no final LayerNorm); the LayerNorm epsilon; the GELU (GELUS)."""
  block: str = "pre_ln"
  ln_eps: float = LN_EPS
  gelu: str = "tanh"

  @classmethod
  def of(cls, model_cfg):
    """The Arch of a model config (config.model: block, ln_eps, gelu; defaults if absent)."""
    return cls(block=model_cfg.get("block", "pre_ln"),
               ln_eps=float(model_cfg.get("ln_eps", LN_EPS)),
               gelu=model_cfg.get("gelu", "tanh"))


def layer_norm(width, *, dtype, rngs, eps=LN_EPS):
  return nnx.LayerNorm(width, epsilon=eps, dtype=dtype,
                       scale_init=partitioned(ONES, "embed"),
                       bias_init=partitioned(ZEROS, "embed"), rngs=rngs)


def linear(in_features, out_features, names, *, dtype, rngs):
  """Dense layer with xavier-uniform kernel (MAE init) named `names` (in, out)."""
  return nnx.Linear(in_features, out_features, dtype=dtype,
                    kernel_init=partitioned(XAVIER, *names),
                    bias_init=partitioned(ZEROS, names[1]), rngs=rngs)


class Attention(nnx.Module):
  """Multi-head self-attention with a key-padding mask."""

  def __init__(self, width, num_heads, *, dtype, rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}.")
    head_dim = width // num_heads
    # One fused projection for q, k and v: a single larger matmul.
    self.qkv = nnx.LinearGeneral(
        width, (3, num_heads, head_dim), dtype=dtype,
        kernel_init=partitioned(XAVIER, "embed", None, "heads", "kv"),
        bias_init=partitioned(ZEROS, None, "heads", "kv"), rngs=rngs)
    self.out = nnx.LinearGeneral(
        (num_heads, head_dim), width, axis=(-2, -1), dtype=dtype,
        kernel_init=partitioned(XAVIER, "heads", "kv", "embed"),
        bias_init=partitioned(ZEROS, "embed"), rngs=rngs)

  def __call__(self, x_td, valid_bn, causal=False):
    """x_td: the B x N tokens as rows of one matrix (see Block); -> [B * N, width]. `causal`:
    each token attends to itself and the tokens before it only (CLIP's text)."""
    b, n = valid_bn.shape
    qkv = einops.rearrange(self.qkv(x_td), "(b n) three h d -> b n three h d", b=b, n=n)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    # Padding keys are never attended to. A row with no valid key gets a finite uniform
    # average (the mask uses a large negative number, not -inf); such rows are never used.
    y = jax.nn.dot_product_attention(q, k, v, mask=valid_bn[:, None, None, :],
                                     is_causal=causal)
    return self.out(einops.rearrange(y, "b n h d -> (b n) h d"))


class Mlp(nnx.Module):

  def __init__(self, width, mlp_dim, *, dtype, rngs, gelu="tanh"):
    self.fc1 = linear(width, mlp_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = linear(mlp_dim, width, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.gelu = gelu

  def __call__(self, x_bnd):
    return self.fc2(GELUS[self.gelu](self.fc1(x_bnd)))


class Block(nnx.Module):
  """Pre-LN: x + attn(norm1(x)), then x + mlp(norm2(x)). Post-LN (BERT): norm1(x + attn(x)),
  then norm2(x + mlp(x))."""

  def __init__(self, width, num_heads, mlp_dim, *, dtype, rngs, arch=Arch()):
    self.post_ln = arch.block == "post_ln"
    self.norm1 = layer_norm(width, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
    self.attn = Attention(width, num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = layer_norm(width, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
    self.mlp = Mlp(width, mlp_dim, dtype=dtype, rngs=rngs, gelu=arch.gelu)

  def __call__(self, x_bnd, valid_bn, causal=False):
    # Tokens as rows of one [B * N, width] matrix: the linear maps are plain 2-D matmuls,
    # which XLA's CPU backend runs faster than the same work on [B, N, width]
    # (docs/performance.md).
    x_td = einops.rearrange(x_bnd, "b n d -> (b n) d")
    if self.post_ln:
      x_td = self.norm1(x_td + self.attn(x_td, valid_bn, causal))
      x_td = self.norm2(x_td + self.mlp(x_td))
    else:
      x_td = x_td + self.attn(self.norm1(x_td), valid_bn, causal)
      x_td = x_td + self.mlp(self.norm2(x_td))
    return einops.rearrange(x_td, "(b n) d -> b n d", b=x_bnd.shape[0])


# remat policies by config name: what a block keeps for the backward pass.
REMAT_POLICIES = {
    "none": None,  # Keep everything (no recomputation).
    "full": jax.checkpoint_policies.nothing_saveable,  # Keep only the block's input.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # Keep matmul outputs.
}


class Stack(nnx.Module):
  """`depth` Blocks applied in order; scanned over a stacked 'layers' axis or unrolled."""

  def __init__(self, width, depth, num_heads, mlp_dim, *, dtype, rngs, scan=False,
               remat="none", arch=Arch()):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat={remat!r}: use one of {list(REMAT_POLICIES)}.")
    self.scan, self.remat = scan, remat
    self.width, self.depth, self.mlp_dim = width, depth, mlp_dim
    make = lambda r: Block(width, num_heads, mlp_dim, dtype=dtype, rngs=r, arch=arch)
    if scan:
      make = nnx.split_rngs(splits=depth)(nnx.vmap(
          make, in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"}))
      self.blocks = make(rngs)
    else:
      self.blocks = nnx.List([make(rngs) for _ in range(depth)])

  def __call__(self, x_bnd, valid_bn, causal=False):
    def apply(x_bnd, block_state):
      x_bnd = sharding.constrain(x_bnd, ("batch", "length", "act_embed"))
      return nnx.merge(graphdef, block_state)(x_bnd, valid_bn, causal)

    if self.remat != "none":
      apply = jax.checkpoint(apply, policy=REMAT_POLICIES[self.remat])
    if self.scan:
      graphdef, stacked = nnx.split(self.blocks)
      x_bnd, _ = jax.lax.scan(lambda x, s: (apply(x, s), None), x_bnd, stacked)
      return x_bnd
    for block in self.blocks:
      graphdef, block_state = nnx.split(block)
      x_bnd = apply(x_bnd, block_state)
    return x_bnd

  def useful_flops(self, valid_bn):
    """Forward matmul FLOPs of these blocks on each row's real tokens only: the projections
    and MLP per valid token, attention between valid queries and valid keys."""
    n_b = valid_bn.sum(1, dtype=jnp.float32)
    per_token = 2 * (4 * self.width * self.width + 2 * self.width * self.mlp_dim)
    return self.depth * (per_token * n_b.sum() + 4 * self.width * jnp.square(n_b).sum())


def linear_flops(layer, valid_bn):
  """Forward matmul FLOPs of an nnx.Linear on the valid rows of its input."""
  return 2.0 * layer.in_features * layer.out_features * valid_bn.sum(dtype=jnp.float32)


class Encoder(nnx.Module):
  """A stack of blocks, then (pre-LN blocks) a final LayerNorm: (x_bnd: batch, tokens, width;
  valid_bn) -> x_bnd."""

  def __init__(self, width, depth, num_heads, mlp_dim, *, dtype, rngs, scan=False,
               remat="none", arch=Arch()):
    self.blocks = Stack(width, depth, num_heads, mlp_dim, dtype=dtype, rngs=rngs, scan=scan,
                        remat=remat, arch=arch)
    # Post-LN blocks end in a LayerNorm already.
    self.norm = (layer_norm(width, dtype=dtype, rngs=rngs, eps=arch.ln_eps)
                 if arch.block == "pre_ln" else None)

  def __call__(self, x_bnd, valid_bn, causal=False):
    with jax.named_scope("encoder"):  # Names the ops in profiles.
      x_bnd = self.blocks(x_bnd, valid_bn, causal)
      return x_bnd if self.norm is None else self.norm(x_bnd)
