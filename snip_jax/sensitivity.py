"""Connection sensitivity (SNIP, Lee et al. 2019, eq. 6).

The network computes with ``c ⊙ w``; the sensitivity of connection ``j`` is
``s_j = |g_j| / Σ_k |g_k|`` with ``g = ∂L/∂c`` at ``c = 1``. We take exactly that derivative: one
``jax.grad`` of the user's loss with respect to a mask pytree of ones multiplied into the params,
so the model code needs no change. (At ``c = 1`` it equals ``w ⊙ ∂L/∂w``; the tests check this.)

Iterative pruning rescores a pruned network: the same derivative taken at ``c = mask``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from snip_jax import masks

PyTree = Any


def connection_sensitivity(
  loss_fn: Callable[..., jax.Array],
  params: PyTree,
  *args: Any,
  filter_fn: masks.FilterFn = masks.kernels,
  normalize: bool = True,
  mask: PyTree | None = None,
) -> PyTree:
  """SNIP scores of every prunable connection.

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar``, e.g. the mean cross-entropy on a batch.
    params: the params at initialisation.
    *args: passed to ``loss_fn`` after the params (typically the scoring batch).
    filter_fn: which leaves are prunable (see :mod:`snip_jax.masks`).
    normalize: divide by the sum over all prunable connections, as in the paper. Selection is
      invariant to it; leave it on to get the paper's ``s_j``. When every gradient is zero (a
      dead network) the scores stay zero rather than 0/0, and
      :func:`snip_jax.selection.top_k_mask` warns.
    mask: where to take the derivative: ``c = mask`` (a mask shaped like ``params``, e.g. the
      current mask of an iteratively pruned network) instead of ``c = 1``. The loss then sees
      the pruned network ``w ⊙ mask``.

  Returns:
    A pytree shaped like ``params`` of non-negative float32 scores of the candidates;
    the other leaves are ``int8`` zeros (:func:`snip_jax.masks.not_a_candidate`), which
    :func:`snip_jax.selection.top_k_mask` never selects over.
  """
  # Candidates: floating-point params the filter admits (never a bool or integer param).
  prunable = jax.tree.map_with_path(lambda path, p: masks.is_prunable(path, p, filter_fn), params)

  def loss_of_mask(c):
    # Only candidates are multiplied: the others (RNG keys and counters of an NNX state
    # included) reach the loss as they are, and their scores are zero.
    masked_params = jax.tree.map(
      lambda w, ci, keep: w * ci.astype(w.dtype) if keep else w, params, c, prunable
    )
    return loss_fn(masked_params, *args)

  if mask is None:
    c = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), jnp.float32), params)
  else:
    c = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), masks.conform_mask(params, mask))
  grads = jax.grad(loss_of_mask)(c)
  scores = jax.tree.map(
    lambda g, keep: jnp.abs(g) if keep else masks.not_a_candidate(g), grads, prunable
  )
  return masks.normalised_scores(scores) if normalize else scores
