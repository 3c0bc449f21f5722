"""Contrastive losses over a batch-sharded global batch, in per-device memory that does not grow
with the number of devices.

The dense losses in `contrastive` build similarities of a device's rows against the whole batch
(an f32[b, B] slab and its gradient, b = B / n rows per device). Here the n devices along the
batch axes form a ring instead: each keeps its rows of z_a and passes its chunk of z_b around
with `lax.ppermute`, one f32[b, b] block of similarities per step. Rows keep a streaming
logsumexp; for InfoNCE's column direction each traveling chunk carries its own running column
logsumexp and arrives home complete after a full circle.

Backprop is a second trip around the ring (a custom VJP): each device recomputes its blocks,
adds to the gradient of its own rows, and the gradient of each traveling chunk travels with it
back home. So a device holds O(b*E + b*b) for the loss and its gradient, whatever n is; plain
autodiff through the scan would keep all n traveling chunks, O(B*E), for the backward pass.

Global row order: device index along the axis (`lax.axis_index`, major to minor over a tuple of
mesh axes), then local row. This module is a helper, not an objective (it defines no `loss`).
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from mmjax.errors import UserError
from mmjax.objectives import similarity

KINDS = ("infonce", "siglip")


def _matmul(x, y):
  # HIGHEST, like similarity.similarities: the gradients must match the dense loss's.
  return jnp.matmul(x, y, precision=lax.Precision.HIGHEST)


def _shift(x, axis_name):
  """Sends x one device along the ring: device d's value goes to device d + 1 (mod n)."""
  n = lax.axis_size(axis_name)
  return lax.ppermute(x, axis_name, [(d, (d + 1) % n) for d in range(n)])


def _ring(visit, z_b, carry, state, axis_name):
  """Visits the n - 1 other devices' chunks of z_b, then brings each carry home.

  The caller handles its own chunk (where the positives are) and passes the results in:
  visit(z_be, carry, state) -> (carry, state) handles one chunk, carry being what travels with
  it and state what stays. Returns (carry, state), carry back on its chunk's home device after
  the full circle.
  """
  def step(loop, _):
    z_be, carry, state = loop
    z_be, carry = _shift((z_be, carry), axis_name)
    carry, state = visit(z_be, carry, state)
    return (z_be, carry, state), None

  (_, carry, state), _ = lax.scan(step, (z_b, carry, state), None,
                                  length=lax.axis_size(axis_name) - 1)
  return _shift(carry, axis_name), state  # The n-th move brings each carry home.


# -- InfoNCE ----------------------------------------------------------------------------------

def infonce_share(z_a, z_b, scale, axis_name, valid=None):
  """This device's share of the symmetric CLIP loss, called inside shard_map/pmap over axis_name.

  z_a, z_b: this device's rows f32[b, E] (L2-normalized) of a global batch B = b * axis size;
  axis_name: the mapped axis, or a tuple of mesh axes; valid: bool[b], the rows that are pairs
  (None: all). Returns 0.5 * (sum of the local valid rows' cross-entropies over all valid
  columns + sum of the local valid columns' cross-entropies over all valid rows); psum over
  the axis / B is `contrastive.infonce` when every row is valid. Under pmap, the gradient of a
  device's share w.r.t. its own z_a, z_b is already the full one (cotangents travel back
  around the ring); its gradient w.r.t. scale is a partial, to be summed over the axis.
  """
  # Scale goes into the rows, so the custom VJP only sees this device's arrays; autodiff turns
  # their gradient into scale's, summed over the axis under shard_map, per device under pmap.
  return _infonce_ring(scale * z_a, z_b, similarity.weights(valid, z_a.shape[0]), axis_name)


def _infonce_forward(x_a, z_b, w, axis_name):
  """Ring over logits x_a @ z_b.T: (share, residuals for the backward ring). The chunk of z_b
  travels with its weights; rows skip masked columns and columns skip masked rows."""
  m_a = similarity.logit_mask(w)[:, None]
  # Own chunk first: the chunk whose origin is this device holds the positives.
  logits_bb = similarity.similarities(x_a, z_b)
  pos_b = jnp.diagonal(logits_bb)
  row_lse_b = jax.nn.logsumexp(logits_bb + similarity.logit_mask(w)[None, :], axis=1)
  col_lse_b = jax.nn.logsumexp(logits_bb + m_a, axis=0)

  def visit(chunk, col_lse_b, row_lse_b):
    z_be, w_e = chunk
    logits_bb = similarity.similarities(x_a, z_be)
    m_e = similarity.logit_mask(w_e)[None, :]
    row_lse_b = jnp.logaddexp(row_lse_b, jax.nn.logsumexp(logits_bb + m_e, axis=1))
    col_lse_b = jnp.logaddexp(col_lse_b, jax.nn.logsumexp(logits_bb + m_a, axis=0))
    return col_lse_b, row_lse_b

  col_lse_b, row_lse_b = _ring(visit, (z_b, w), col_lse_b, row_lse_b, axis_name)
  share = 0.5 * ((w * (row_lse_b - pos_b)).sum() + (w * (col_lse_b - pos_b)).sum())
  return share, (x_a, z_b, w, row_lse_b, col_lse_b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _infonce_ring(x_a, z_b, w, axis_name):
  return _infonce_forward(x_a, z_b, w, axis_name)[0]


def _infonce_backward(axis_name, residuals, g):
  x_a, z_b, w, row_lse_b, col_lse_b = residuals
  m_a = similarity.logit_mask(w)[:, None]

  def block(z_be, w_e, col_lse_b, g_col, own):
    """Gradients from one block: its rows are ours (cotangent g), its columns belong to the
    chunk's home device (whose cotangent and column logsumexps travel with the chunk)."""
    logits_bb = similarity.similarities(x_a, z_be)
    row_p = jnp.exp(logits_bb + similarity.logit_mask(w_e)[None, :] - row_lse_b[:, None])
    col_p = jnp.exp(logits_bb + m_a - col_lse_b[None, :])
    dlogits_bb = 0.5 * ((g * w)[:, None] * row_p + (g_col * w_e)[None, :] * col_p)
    if own:  # Positives: -logit_ii in both the row and the column cross-entropy.
      dlogits_bb -= jnp.diag(g * w)
    return _matmul(dlogits_bb, z_be), _matmul(dlogits_bb.T, x_a)

  dx_a, dz_b = block(z_b, w, col_lse_b, g, own=True)

  def visit(chunk, carry, dx_a):
    col_lse_b, g_col, dz_be = carry
    da, db = block(*chunk, col_lse_b, g_col, own=False)
    return (col_lse_b, g_col, dz_be + db), dx_a + da

  (_, _, dz_b), dx_a = _ring(visit, (z_b, w), (col_lse_b, g, dz_b), dx_a, axis_name)
  return dx_a, dz_b, jnp.zeros_like(w)


_infonce_ring.defvjp(_infonce_forward, _infonce_backward)


# -- SigLIP -----------------------------------------------------------------------------------

def siglip_share(z_a, z_b, scale, bias, axis_name, valid=None):
  """This device's share of the SigLIP loss, called inside shard_map/pmap over axis_name.

  z_a, z_b: this device's rows f32[b, E] (L2-normalized); valid: bool[b], the rows that are
  pairs (None: all). Returns the sum over the local valid rows i and all valid columns j of
  -log sigmoid(label_ij * (scale * sim_ij + bias)); psum over the axis / B is
  `contrastive.siglip` when every row is valid. Gradients under pmap: as for `infonce_share`
  (bias like scale).
  """
  # [scale * z_a, bias] @ [z_b, 1].T = scale * sim + bias: scale and bias go into the rows, as
  # in infonce_share, and the traveling chunks grow by one column.
  b = z_a.shape[0]
  x_a = jnp.concatenate([scale * z_a, jnp.broadcast_to(bias, (b, 1)).astype(z_a.dtype)], axis=1)
  x_b = jnp.concatenate([z_b, jnp.ones((b, 1), z_b.dtype)], axis=1)
  return _siglip_ring(x_a, x_b, similarity.weights(valid, b), axis_name)


def _siglip_forward(x_a, x_b, w, axis_name):
  """Ring over logits x_a @ x_b.T: (share, residuals for the backward ring). The chunk of x_b
  travels with its weights; a pair counts when both its row and column are valid."""
  # Own chunk first: the only one with positives (its diagonal).
  logits_bb = similarity.similarities(x_a, x_b)
  labels_bb = 2.0 * jnp.eye(logits_bb.shape[0]) - 1.0
  total = -(jnp.outer(w, w) * jax.nn.log_sigmoid(labels_bb * logits_bb)).sum()

  def visit(chunk, carry, total):
    # Other devices' columns: all negatives.
    x_be, w_e = chunk
    logits_bb = similarity.similarities(x_a, x_be)
    return carry, total - (jnp.outer(w, w_e) * jax.nn.log_sigmoid(-logits_bb)).sum()

  _, total = _ring(visit, (x_b, w), (), total, axis_name)
  return total, (x_a, x_b, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _siglip_ring(x_a, x_b, w, axis_name):
  return _siglip_forward(x_a, x_b, w, axis_name)[0]


def _siglip_backward(axis_name, residuals, g):
  x_a, x_b, w = residuals

  def block(x_be, w_e, own):
    """Gradients from one block, all of whose pairs are terms of this device's share."""
    logits_bb = similarity.similarities(x_a, x_be)
    # d/dx -log sigmoid(label * x) = -label * sigmoid(-label * x); label -1 off the diagonal.
    labels_bb = 2.0 * jnp.eye(logits_bb.shape[0]) - 1.0 if own else -1.0
    dlogits_bb = -g * jnp.outer(w, w_e) * labels_bb * jax.nn.sigmoid(-labels_bb * logits_bb)
    return _matmul(dlogits_bb, x_be), _matmul(dlogits_bb.T, x_a)

  dx_a, dx_b = block(x_b, w, own=True)

  def visit(chunk, dx_be, dx_a):
    da, db = block(*chunk, own=False)
    return dx_be + db, dx_a + da

  dx_b, dx_a = _ring(visit, (x_b, w), dx_b, dx_a, axis_name)
  return dx_a, dx_b, jnp.zeros_like(w)


_siglip_ring.defvjp(_siglip_forward, _siglip_backward)


# -- Under jit --------------------------------------------------------------------------------

def sharded_sum(kind, z_a, z_b, scale, bias, mesh, batch_axes=("data", "fsdp"), valid=None):
  """The summed contrastive loss ('infonce' or 'siglip') of global f32[B, E] embeddings: the
  dense loss times the number of pairs.

  Call under jit with z_a, z_b (and valid bool[B], the rows that are pairs; None: all)
  batch-sharded over batch_axes (a mesh axis name or a tuple of them); scale and bias are
  scalars (bias is ignored for 'infonce'). Other mesh axes (e.g. `tensor`) just replicate the
  computation. Returns the replicated scalar sum.
  """
  if kind not in KINDS:
    raise UserError(f"Contrastive loss type {kind!r}: use one of {list(KINDS)}.")
  if not isinstance(batch_axes, str):
    batch_axes = tuple(batch_axes)  # Hashable: the custom VJPs take it as a static argument.
  def body(z_a, z_b, scale, bias, valid):
    if kind == "infonce":
      share = infonce_share(z_a, z_b, scale, batch_axes, valid)
    else:
      share = siglip_share(z_a, z_b, scale, bias, batch_axes, valid)
    return lax.psum(share, batch_axes)

  bias = jnp.zeros((), jnp.float32) if bias is None else bias
  valid = jnp.ones(z_a.shape[:1], bool) if valid is None else valid
  rows = P(batch_axes)
  return jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, P(), P(), rows),
                       out_specs=P())(z_a, z_b, scale, bias, valid)


def sharded_loss(kind, z_a, z_b, scale, bias, mesh, batch_axes=("data", "fsdp"), valid=None):
  """`sharded_sum` over the number of pairs (B when valid is None): equal to the dense loss of
  the valid rows alone."""
  pairs = z_a.shape[0] if valid is None else jnp.maximum(valid.sum(), 1).astype(jnp.float32)
  return sharded_sum(kind, z_a, z_b, scale, bias, mesh, batch_axes, valid) / pairs
