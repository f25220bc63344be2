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
  ``|w|`` and grows ``d_l`` of the weights not kept after the drop: at random (SET) or those with
  the largest ``|∂L/∂w|`` on the current batch (RigL). Each layer's count, hence κ, never
  changes. As in RigL's Algorithm 1 and its authors' code, the weights just dropped may be grown
  again: such a weight is kept through the update, with its value and optimizer state (a
  dropped weight whose gradient is among the largest stays), so an update changes at most
  ``2 d_l`` coordinates of layer ``l``. ``f`` follows RigL's cosine decay over the update window,
  ``f_t = f_0 / 2 · (1 + cos(π (t - begin) / (end - begin)))`` (:func:`cosine_drop_fraction`),
  and nothing changes after ``end_step``.

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
  """RigL's drop fraction ``step`` steps into the update window: ``initial / 2 · (1 + cos(π ·
  step / end_step))``, 0 from ``end_step`` on (the training loop counts both from the window's
  first step)."""
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
  """One SET/RigL update: each prunable layer drops its ``d_l = floor(fraction · kept_l)`` kept
  weights of smallest ``|w|`` and grows the ``d_l`` with the largest ``grow_scores`` among the
  weights not kept after the drop (those just dropped included: one grown again is simply
  kept). Every layer keeps its count exactly.

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
  moved = [math.floor(fraction * kept) for kept, _ in counts]
  stay = selection.top_k_per_layer(
    masks.map_candidates(jnp.abs, params, filter_fn=filter_fn),
    [kept - d for (kept, _), d in zip(counts, moved, strict=True)],
    filter_fn=filter_fn,
    within=mask,
  )
  # Every weight not staying may grow, the ones just dropped included (RigL's Algorithm 1).
  grown = selection.top_k_per_layer(
    masks.map_candidates(lambda _, g: g, params, grow_scores, filter_fn=filter_fn),
    moved,
    filter_fn=filter_fn,
    within=jax.tree.map(jnp.logical_not, stay),
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
  """RigL's update: drop the smallest ``|w|``, grow the weights not kept after the drop with the
  largest ``|grads|`` (the dense gradient of the loss on the current batch, pruned coordinates
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
  min_kept_per_layer: int = 0,
) -> PyTree:
  """Gradual magnitude pruning's update: the largest ``|w|`` among the weights ``mask`` still
  keeps, at ``sparsity`` (exact κ; ``distribution`` and ``min_kept_per_layer``, the guard
  against a layer's collapse, as in :func:`snip_jax.selection.top_k_mask`). A pruned weight is
  never revived."""
  return selection.top_k_mask(
    masks.map_candidates(jnp.abs, params, filter_fn=filter_fn),
    sparsity,
    filter_fn=filter_fn,
    distribution=distribution,
    min_kept_per_layer=min_kept_per_layer,
    within=mask,
  )
