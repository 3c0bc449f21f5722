"""What the dense (contrastive) and the ring (chunked_contrastive) losses share: the similarity
matmul and the masking of rows that are not pairs. A helper, not an objective (no `loss`)."""
import jax
import jax.numpy as jnp

# Added to the logits of rows / columns that are not pairs (an example lacking a side): exp()
# of it underflows to exactly 0 for any logit a scale <= 100 can make, yet it stays finite, so a
# batch without a single pair gives a loss and gradients of 0, never NaN.
MASKED_LOGIT = -1e5


def similarities(z_a, z_b):
  """f32[a, b]: z_a @ z_b.T at HIGHEST precision: at scale ~100, TPU's default bfloat16 passes
  would move logits by about 1, and the ring's gradients must match the dense loss's."""
  return jnp.matmul(z_a, z_b.T, precision=jax.lax.Precision.HIGHEST)


def weights(valid, b, dtype=jnp.float32):
  """valid bool[b] (None: all rows) -> 0/1 weights f32[b]."""
  return jnp.ones((b,), dtype) if valid is None else valid.astype(dtype)


def logit_mask(w_b):
  """0 where w_b is 1, MASKED_LOGIT where it is 0."""
  return jnp.where(w_b > 0, 0.0, MASKED_LOGIT).astype(w_b.dtype)
