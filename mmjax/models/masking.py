"""Which tokens masked modeling hides: pure functions of explicit keys, fixed shapes.

Every row draws from its own key (keys_b: a key per example, from the step's key and the
example's position in the global batch), so an example's mask does not depend on how the batch
is split over devices, processes or gradient-accumulation micro-batches.

Image and audio drop tokens MAE-style (the encoder sees only N_keep of N tokens, gathered), so
every row keeps exactly the same number and shapes stay static. Text keeps its full length and
hides tokens through the attention mask instead, because captions differ in length and a fixed
count of kept tokens would either cut long captions or pad short ones.
"""
import jax
import jax.numpy as jnp


def num_keep(num_tokens, ratio):
  """Tokens kept from `num_tokens` at mask `ratio` (static): N - round(ratio * N), at least 1."""
  return max(1, num_tokens - int(round(ratio * num_tokens)))


def _uniform_rows(keys_b, num_tokens):
  """f32[B, N] uniform noise, row b from keys_b[b]."""
  return jax.vmap(lambda k: jax.random.uniform(k, (num_tokens,)))(keys_b)


def row_keys(key, rows_b):
  """A key per example: `key` folded with each example's global row index."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, rows_b)


def fold_each(keys_b, data):
  """Every key of keys_b folded with the same integer `data`."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys_b, data)


def random_keep(keys_b, num_tokens, ratio, valid_bn=None):
  """A uniformly random subset per row, valid tokens first: a row keeps padding only when it
  has fewer than K valid tokens (valid_bn None: every token is valid).

  Returns keep_bk int32[B, K] (kept token indices, K = num_keep) and restore_bn int32[B, N]
  (the inverse permutation: token n sits at position restore_bn[n] of [kept, hidden]).
  """
  noise_bn = _uniform_rows(keys_b, num_tokens)
  if valid_bn is not None:  # Padding's noise lies above every valid token's.
    noise_bn = jnp.where(valid_bn, noise_bn, noise_bn + 1.0)
  shuffle_bn = jnp.argsort(noise_bn, axis=1).astype(jnp.int32)
  restore_bn = jnp.argsort(shuffle_bn, axis=1).astype(jnp.int32)
  return shuffle_bn[:, :num_keep(num_tokens, ratio)], restore_bn


def hidden_from_restore(restore_bn, keep):
  """bool[B, N]: True for tokens that random_keep did not keep."""
  return restore_bn >= keep


def gather_tokens(x_bn_, idx_bk):
  """x[b, idx[b, k], ...] for every b, k: [B, N, ...] -> [B, K, ...]."""
  idx = idx_bk.reshape(idx_bk.shape + (1,) * (x_bn_.ndim - 2))
  return jnp.take_along_axis(x_bn_, idx, axis=1)


def restore_tokens(x_bkd, fill_d, restore_bn):
  """Puts kept tokens back in place and `fill_d` (the mask token) everywhere else: -> [B, N, D]."""
  b, k, d = x_bkd.shape
  n = restore_bn.shape[1]
  fill_bnd = jnp.broadcast_to(fill_d.astype(x_bkd.dtype), (b, n - k, d))
  return gather_tokens(jnp.concatenate([x_bkd, fill_bnd], axis=1), restore_bn)


def hide_valid(keys_b, maskable_bl, ratio, valid_bl=None):
  """bool[B, L]: exactly round(ratio * n_maskable) of each row's maskable tokens, uniformly at
  random, leaving at least one valid token (valid_bl; default maskable_bl) visible; no other
  token (padding, [CLS], [SEP]) is ever hidden."""
  valid_bl = maskable_bl if valid_bl is None else valid_bl
  n_maskable = maskable_bl.sum(axis=1, keepdims=True)
  n_valid = valid_bl.sum(axis=1, keepdims=True)
  n_hide = jnp.clip(jnp.round(ratio * n_maskable), 0,
                    jnp.minimum(n_maskable, jnp.maximum(n_valid - 1, 0)))
  # The others get noise above every maskable token's, so the lowest ranks are all maskable.
  noise_bl = jnp.where(maskable_bl, _uniform_rows(keys_b, maskable_bl.shape[1]), 2.0)
  rank_bl = jnp.argsort(jnp.argsort(noise_bl, axis=1), axis=1)
  return rank_bl < n_hide
