"""Scores -> mask: exact global top-κ over all prunable connections.

``κ = round((1 - sparsity) · N)`` where ``N`` counts the prunable coordinates. Selection is
global over layers (the paper's choice): the prunable score leaves are flattened in tree order
and concatenated, and ``jax.lax.top_k`` picks the κ largest. Ties are broken by that flat order
(``lax.top_k`` puts the lower index first), so exactly κ connections are kept and the mask is a
deterministic function of the scores.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import masks

PyTree = Any


def validate_sparsity(sparsity: Any) -> float:
  """Returns ``sparsity`` as a float, or raises ``ValueError`` unless it lies in ``[0, 1)``."""
  if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
    raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}.")
  value = float(sparsity)
  if not 0.0 <= value < 1.0:
    raise ValueError(
      f"sparsity must lie in [0, 1) (the fraction of prunable weights removed), got {value}; "
      "e.g. 0.98 keeps 2% of the connections."
    )
  return value


def num_kept(num_prunable: int, sparsity: float) -> int:
  """κ, the number of connections kept: ``round((1 - sparsity) * num_prunable)``.

  Raises:
    ValueError: for a bad sparsity, or one so close to 1 that nothing would be kept.
  """
  sparsity = validate_sparsity(sparsity)
  kappa = round((1.0 - sparsity) * num_prunable)
  if kappa < 1:
    raise ValueError(
      f"sparsity={sparsity} keeps {kappa} of {num_prunable} prunable weights; choose a "
      f"sparsity below {1.0 - 0.5 / num_prunable:.6g} so that at least one weight is kept."
    )
  return kappa


@functools.partial(jax.jit, static_argnames="kappa")
def _top_k_flat(flat_scores: jax.Array, kappa: int) -> jax.Array:
  _, kept_idx = jax.lax.top_k(flat_scores, kappa)
  return jnp.zeros(flat_scores.shape, bool).at[kept_idx].set(True)


def top_k_mask(
  scores: PyTree,
  sparsity: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
) -> PyTree:
  """Keeps the κ highest-scoring prunable connections, globally over all layers.

  Call it outside ``jax.jit``: it validates ``sparsity`` and the scores on the host, then runs
  a compiled selection (κ is static).

  Args:
    scores: a pytree shaped like the params (e.g. from
      :func:`snip_jax.sensitivity.connection_sensitivity`); larger means more important.
    sparsity: fraction of prunable connections to remove, in ``[0, 1)``.
    filter_fn: which leaves are prunable; other leaves get an all-``True`` mask.

  Returns:
    A ``bool`` mask pytree shaped like ``scores`` with exactly κ prunable coordinates ``True``.

  Raises:
    ValueError: bad sparsity, no prunable leaves, or non-finite scores.
  """
  prunable = masks.prunable_leaves(scores, filter_fn)
  leaves, treedef = jax.tree.flatten(scores)
  flags = jax.tree.leaves(prunable)
  chosen = [
    jnp.ravel(leaf).astype(jnp.float32) for leaf, keep in zip(leaves, flags, strict=True) if keep
  ]
  if not chosen:
    raise ValueError("No prunable leaves: filter_fn rejected every leaf of the scores tree.")
  flat = jnp.concatenate(chosen)
  if not bool(jnp.all(jnp.isfinite(flat))):
    bad = int(jnp.sum(~jnp.isfinite(flat)))
    raise ValueError(
      f"{bad} of {flat.size} scores are NaN or infinite; refusing to build a mask from them. "
      "Check the initialisation and the scoring batch (an exploding init or a loss of NaN "
      "causes this; all-zero gradients make the normalised scores 0/0)."
    )
  kappa = num_kept(flat.size, sparsity)
  flat_mask = _top_k_flat(flat, kappa)

  sizes = [math.prod(np.shape(leaf)) for leaf in chosen]
  pieces = iter(jnp.split(flat_mask, np.cumsum(sizes)[:-1]))
  mask_leaves = [
    next(pieces).reshape(np.shape(leaf)) if keep else jnp.ones(np.shape(leaf), bool)
    for leaf, keep in zip(leaves, flags, strict=True)
  ]
  return jax.tree.unflatten(treedef, mask_leaves)
