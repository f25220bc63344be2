"""Sanity checks for a pruning-at-initialisation mask: does its per-weight choice matter?

Frankle et al. (ICLR 2021, "Pruning Neural Networks at Initialization: Why are We Missing the
Mark?") and Su et al. (NeurIPS 2020, "Sanity-Checking Pruning Methods: Random Tickets can Win the
Jackpot") ask of every at-init criterion whether its mask trains better than masks that keep
only part of what it chose. A criterion whose mask does no better than these has found good
layer-wise densities, not good connections. The checks (:data:`CHECKS`):

==================  ===========================================================================
``shuffle``         each prunable layer's mask permuted at random (:func:`shuffle_within_layers`)
``layer_random``    random scores, each layer keeping the mask's count (:func:`layerwise_random`)
``invert``          the criterion's scores negated: the κ lowest-scoring connections are kept
                    (:func:`inverted_scores`)
``reinit``          the mask kept, the weights it is applied to drawn afresh (in the training
                    loop: ``config.sanity_check = "reinit"``)
==================  ===========================================================================

``shuffle`` and ``layer_random`` give masks with the same distribution: uniformly random within
each layer, with the layer's exact count. The first draws a permutation of the mask, the second
selects each layer's top-κ_l of uniform scores, as the two papers describe them; reporting both
is a check that the harness treats them alike. Each keeps every layer's count, and so κ, exactly;
``invert`` keeps κ exactly (the selection is :func:`snip_jax.selection.top_k_mask`'s).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from snip_jax import masks, selection

PyTree = Any

#: The sanity checks, by name (``config.sanity_check``).
CHECKS = ("shuffle", "layer_random", "invert", "reinit")


def validate_check(name: Any) -> str:
  """Returns ``name``, or raises ``ValueError`` naming the choices."""
  if not isinstance(name, str) or name not in CHECKS:
    raise ValueError(f"Unknown sanity check {name!r}; choose one of {CHECKS}.")
  return name


def shuffle_within_layers(
  mask: PyTree, key: jax.Array, *, filter_fn: masks.FilterFn = masks.kernels
) -> PyTree:
  """``mask`` with each prunable leaf's coordinates permuted at random (its count kept exactly).

  Args:
    mask: a mask pytree (``bool`` leaves).
    key: randomness; leaf ``i`` (in tree order) uses ``fold_in(key, i)``.
    filter_fn: which leaves are prunable; the others are returned unchanged.

  Returns:
    A ``bool`` mask pytree shaped like ``mask``.
  """

  def shuffle(i, path, leaf):
    leaf = jnp.asarray(leaf, bool)
    if not filter_fn(path, leaf) or leaf.size == 0:
      return leaf
    flat = jax.random.permutation(jax.random.fold_in(key, i), leaf.reshape(-1))
    return flat.reshape(leaf.shape)

  with_paths, treedef = jax.tree_util.tree_flatten_with_path(mask)
  return jax.tree.unflatten(
    treedef, [shuffle(i, path, leaf) for i, (path, leaf) in enumerate(with_paths)]
  )


def layerwise_random(
  mask: PyTree, key: jax.Array, *, filter_fn: masks.FilterFn = masks.kernels
) -> PyTree:
  """A random mask with ``mask``'s exact count in every prunable leaf: each leaf keeps the
  top-κ_l of uniform random scores (:func:`snip_jax.selection.top_k_like`).

  Args:
    mask: a mask pytree (``bool`` leaves), e.g. SNIP's.
    key: randomness; leaf ``i`` (in tree order) uses ``fold_in(key, i)``.
    filter_fn: which leaves are prunable; the others get an all-``True`` mask.

  Returns:
    A ``bool`` mask pytree shaped like ``mask``.
  """
  leaves, treedef = jax.tree.flatten(mask)
  draws = [
    jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(leaf)) for i, leaf in enumerate(leaves)
  ]
  return selection.top_k_like(jax.tree.unflatten(treedef, draws), mask, filter_fn=filter_fn)


def inverted_scores(scores: PyTree) -> PyTree:
  """``-scores`` on the candidate leaves (the others unchanged): selecting the top-κ of these
  keeps the κ lowest-scoring connections, with ties still going to the lower index."""
  return jax.tree.map(lambda s: -s if masks.is_candidate(s) else s, scores)
