"""Masks that change during training: gradual magnitude pruning, SET and RigL.

SNIP fixes its mask before training; the methods it is measured against change theirs while
training, at scheduled steps only, through the same exact selection (every count below is exact,
ties go to the lower index) and the same masked optimizer (:func:`snip_jax.optim.replace_mask`
installs a new mask: dropped weights and their optimizer state become exactly 0, grown ones
start at 0):

* **Gradual magnitude pruning** (Zhu & Gupta 2017, "To prune, or not to prune"): from
  ``initial`` sparsity at ``begin_step`` to ``final`` at ``end_step`` along
  ``s_t = final + (initial - final) (1 - (t - begin) / (end - begin))^3``, updated every
  ``every`` steps; each update keeps the largest ``|w|`` among the weights still kept
  (:func:`gmp_sparsity`, :func:`gmp_mask`).
* **SET** (Mocanu et al. 2018) and **RigL** (Evci et al. 2020, "Rigging the Lottery"): at each
  update every prunable layer drops the ``d_l = floor(f · kept_l)`` kept weights of smallest
  ``|w|`` and grows ``d_l`` of the weights that were pruned before the update: at random (SET) or
  those with the largest ``|∂L/∂w|`` on the current batch (RigL). Each layer's count, hence κ,
  never changes. ``f`` follows RigL's cosine decay, ``f_t = f_0 / 2 · (1 + cos(π t / end))``
  (:func:`cosine_drop_fraction`), and nothing changes after ``end_step``. A weight dropped at
  an update cannot be regrown by the same update (RigL's authors allow it, and then it restarts
  at zero; excluding it keeps "what is dropped" and "what is grown" disjoint, so each update
  changes exactly ``2 d_l`` coordinates of layer ``l``).

Any at-init mask can start SET or RigL (SNIP's, random, ERK: ``snip_jax.criteria.prune``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import masks, selection

PyTree = Any

#: The methods that change the mask during training (``config.dynamic``).
METHODS = ("gmp", "set", "rigl")


def validate_method(name: Any) -> str:
  """Returns ``name``, or raises ``ValueError`` naming the choices."""
  if not isinstance(name, str) or name not in METHODS:
    raise ValueError(f"Unknown dynamic sparsity method {name!r}; choose one of {METHODS}.")
  return name


def is_update_step(step: int, *, every: int, begin_step: int, end_step: int) -> bool:
  """Whether the mask changes after ``step`` updates: every ``every`` steps from ``begin_step``
  (exclusive: the mask given at the start holds until then), and at ``end_step`` itself, so
  that gradual pruning reaches its target whether or not ``end_step`` is on that grid."""
  if every < 1:
    raise ValueError(f"every must be a positive number of steps, got {every}.")
  if not begin_step < step <= end_step:
    return False
  return (step - begin_step) % every == 0 or step == end_step


def gmp_sparsity(
  step: int, *, final: float, initial: float = 0.0, begin_step: int, end_step: int
) -> float:
  """Zhu & Gupta's sparsity after ``step`` steps: ``initial`` until ``begin_step``, then the
  cubic ramp to ``final``, reached at ``end_step`` and held after it."""
  final, initial = selection.validate_sparsity(final), selection.validate_sparsity(initial)
  if not 0 <= begin_step < end_step:
    raise ValueError(f"need 0 <= begin_step < end_step, got {begin_step} and {end_step}.")
  progress = min(max(step - begin_step, 0) / (end_step - begin_step), 1.0)
  return final + (initial - final) * (1.0 - progress) ** 3


def cosine_drop_fraction(step: int, *, initial: float, end_step: int) -> float:
  """RigL's drop fraction after ``step`` steps: ``initial / 2 · (1 + cos(π · step / end_step))``,
  0 from ``end_step`` on."""
  if not 0.0 <= initial <= 1.0:
    raise ValueError(f"the drop fraction must lie in [0, 1], got {initial}.")
  if step >= end_step:
    return 0.0
  return initial / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


def _kept_counts(mask: PyTree, params: PyTree, filter_fn: masks.FilterFn) -> list[tuple[int, int]]:
  """``(kept, size)`` of every prunable leaf, in tree order."""
  return [
    (int(np.count_nonzero(np.asarray(m))), int(np.size(m)))
    for (path, p), m in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(mask), strict=True)
    if masks.is_prunable(path, p, filter_fn)
  ]


def drop_and_grow(
  mask: PyTree,
  params: PyTree,
  grow_scores: PyTree,
  fraction: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
) -> PyTree:
  """One SET/RigL update: each prunable layer drops its ``floor(fraction · kept_l)`` kept
  weights of smallest ``|w|`` and grows as many of its pruned weights, those with the largest
  ``grow_scores``. Every layer keeps its count exactly.

  Args:
    mask: the current ``bool`` mask.
    params: the current params (pruned ones are 0).
    grow_scores: a tree shaped like the params; larger = grown first (random numbers for SET,
      ``|∂L/∂w|`` for RigL).
    fraction: the drop fraction, in ``[0, 1]``.
    filter_fn: which leaves are prunable; the others are kept whole.

  Returns:
    The new ``bool`` mask.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"the drop fraction must lie in [0, 1], got {fraction}.")
  mask = masks.conform_mask(params, mask)
  counts = _kept_counts(mask, params, filter_fn)
  # A layer cannot grow more than it has pruned.
  moved = [min(math.floor(fraction * kept), size - kept) for kept, size in counts]
  stay = selection.top_k_per_layer(
    masks.map_candidates(jnp.abs, params, filter_fn=filter_fn),
    [kept - d for (kept, _), d in zip(counts, moved, strict=True)],
    filter_fn=filter_fn,
    within=mask,
  )
  pruned = jax.tree.map(jnp.logical_not, mask)
  grown = selection.top_k_per_layer(
    masks.map_candidates(lambda _, g: g, params, grow_scores, filter_fn=filter_fn),
    moved,
    filter_fn=filter_fn,
    within=pruned,
  )

  def merge(path, m, p, a, b):
    return (a | b) if masks.is_prunable(path, p, filter_fn) else jnp.asarray(m, bool)

  return jax.tree.map_with_path(merge, mask, params, stay, grown)


def set_mask(
  mask: PyTree,
  params: PyTree,
  key: jax.Array,
  fraction: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
) -> PyTree:
  """SET's update: drop the smallest ``|w|``, grow uniformly at random (leaf ``i`` draws from
  ``fold_in(key, i)``); see :func:`drop_and_grow`."""
  leaves, treedef = jax.tree.flatten(params)
  draws = [
    jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(leaf)) for i, leaf in enumerate(leaves)
  ]
  return drop_and_grow(
    mask, params, jax.tree.unflatten(treedef, draws), fraction, filter_fn=filter_fn
  )


def rigl_mask(
  mask: PyTree,
  params: PyTree,
  grads: PyTree,
  fraction: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
) -> PyTree:
  """RigL's update: drop the smallest ``|w|``, grow the pruned weights with the largest
  ``|grads|`` (the dense gradient of the loss on the current batch, pruned coordinates
  included); see :func:`drop_and_grow`."""
  grow_scores = masks.map_candidates(lambda _, g: jnp.abs(g), params, grads, filter_fn=filter_fn)
  return drop_and_grow(mask, params, grow_scores, fraction, filter_fn=filter_fn)


def gmp_mask(
  mask: PyTree,
  params: PyTree,
  sparsity: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
  distribution: str = "global",
) -> PyTree:
  """Gradual magnitude pruning's update: the largest ``|w|`` among the weights ``mask`` still
  keeps, at ``sparsity`` (exact κ; ``distribution`` as in
  :func:`snip_jax.selection.top_k_mask`). A pruned weight is never revived."""
  return selection.top_k_mask(
    masks.map_candidates(jnp.abs, params, filter_fn=filter_fn),
    sparsity,
    filter_fn=filter_fn,
    distribution=distribution,
    within=mask,
  )
