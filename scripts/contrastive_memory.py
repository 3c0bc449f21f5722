"""Per-device XLA temp memory of the dense contrastive losses against the ring
(mmjax.objectives.chunked_contrastive), compiled ahead of time for a (fake) mesh: the numbers
behind docs/scaling.md's contrastive table (scripts/plan.py) and tests/test_chunked_contrastive.py.
Nothing is run; only compiled.
"""
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax.errors import UserError
from mmjax.objectives import chunked_contrastive
from mmjax.objectives import contrastive


def temp_memory_series(kind, global_batch_sizes, mesh, embed_dim=128,
                       batch_axes=("data", "fsdp")):
  """Per-device XLA temp bytes of value_and_grad (w.r.t. z_a, z_b, scale, bias) of the dense
  loss and of `chunked_contrastive.sharded_loss`, compiled for each global batch size with
  batch-sharded z's.

  Returns {"dense": [bytes per B], "chunked": [bytes per B]}.
  """
  if kind not in chunked_contrastive.KINDS:
    raise UserError(f"Contrastive loss type {kind!r}: use one of "
                    f"{list(chunked_contrastive.KINDS)}.")
  z_sharding = NamedSharding(mesh, P(batch_axes))
  scalar_sharding = NamedSharding(mesh, P())

  def dense(z_a, z_b, scale, bias):
    if kind == "infonce":
      return contrastive.infonce(z_a, z_b, scale)
    return contrastive.siglip(z_a, z_b, scale, bias)

  def chunked(z_a, z_b, scale, bias):
    return chunked_contrastive.sharded_loss(kind, z_a, z_b, scale, bias, mesh, batch_axes)

  # Same shardings in and out for both, so only the loss computation differs.
  out_shardings = (scalar_sharding, (z_sharding, z_sharding, scalar_sharding, scalar_sharding))
  series = {"dense": [], "chunked": []}
  for batch in global_batch_sizes:
    z = jax.ShapeDtypeStruct((batch, embed_dim), jnp.float32, sharding=z_sharding)
    s = jax.ShapeDtypeStruct((), jnp.float32, sharding=scalar_sharding)
    for name, fn in (("dense", dense), ("chunked", chunked)):
      compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)),
                         out_shardings=out_shardings).lower(z, z, s, s).compile()
      series[name].append(int(compiled.memory_analysis().temp_size_in_bytes))
  return series
