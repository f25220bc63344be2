"""The exact top-k kernels behind :func:`snip_jax.selection.top_k_mask`.

Every kernel here keeps exactly the set ``jax.lax.top_k`` keeps: the ``k`` largest scores, ties
broken by the lower flat index, in the total order in which ``-0.0`` ranks just below ``+0.0``.
None of them sorts. Where the scores live decides which one runs (:func:`on_host`):

* on an accelerator (GPU, TPU), :func:`select_device`, a radix select compiled by XLA: the
  scores' IEEE bit patterns become unsigned integers in the same order (:func:`sortable_keys`),
  and :func:`radix_top_k` finds the k-th largest one bit at a time from the top (one counting
  pass over the keys per bit: 32 for float32, each cheap and parallel there), then keeps the
  keys equal to it in index order until ``k`` is reached. ``k`` is a traced value, so iterative
  pruning compiles it once for all its rounds;
* on CPU, :func:`select_host`, the same rules in NumPy on the (zero-copy) host view of the
  scores: one introselect (``np.partition``, :func:`introselect_top_k`) finds the k-th largest
  value ``t``, one pass keeps ``scores >= t``, and only if more than ``k`` tie at ``t`` are the
  surplus ties dropped from the highest index down. XLA:CPU runs the radix select's counting
  passes far slower than NumPy runs this, and ``lax.top_k`` sorts (BENCHMARKS.md, "Selection at
  scale", has the measurements).

Both selections take the same arguments: the flat scores of the prunable leaves (concatenated
in tree order), an optional flat ``within`` (only its ``True`` coordinates may be kept), an
optional per-leaf ``reserve`` (each leaf's top-``reserve_l`` are kept whatever the rest) and the
budgets (one global κ, or one κ_l per leaf). The caller (:mod:`snip_jax.selection`) validates
them: finite scores, κ no more than the candidates, ``Σ reserve ≤ κ``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: Unsigned integer type of the same width as a float, by ``itemsize``.
_UINT = {4: jnp.uint32, 8: jnp.uint64}


def on_host(leaves: Sequence[Any]) -> bool:
  """Whether every array leaf is on the CPU (NumPy arrays, or JAX arrays on CPU devices).

  Args:
    leaves: the leaves of a scores tree; leaves that are not ``jax.Array`` count as on the host.

  Returns:
    ``True`` when the selection should run in NumPy (:func:`select_host`), ``False`` when it
    should run compiled where the scores are (:func:`select_device`).
  """
  return all(
    all(d.platform == "cpu" for d in leaf.devices())
    for leaf in leaves
    if isinstance(leaf, jax.Array)
  )


def flatten_scores(leaf: Any, xp: Any) -> Any:
  """One score leaf as a flat vector of at least float32, the precision the kernels rank in.

  Args:
    leaf: an array of scores.
    xp: ``numpy`` (no copy where the dtype already fits) or ``jax.numpy``.

  Returns:
    ``leaf`` raveled, float32 or wider: lower precision would create ties, and the radix select
    needs 32- or 64-bit keys; float64 (with ``jax_enable_x64``) stays float64.
  """
  flat = xp.ravel(xp.asarray(leaf))
  return flat.astype(jnp.promote_types(flat.dtype, jnp.float32), copy=False)


# --------------------------------------------------------------------------------------------
# On the host: NumPy.


def introselect_top_k(values: np.ndarray, k: int) -> np.ndarray:
  """The ``k`` largest of ``values``, ties to the lower index: one introselect, no sort.

  Args:
    values: a flat float array (``±inf`` allowed, no NaN).
    k: how many to keep; ``k <= 0`` keeps none.

  Returns:
    A ``bool`` array shaped like ``values`` with exactly ``min(k, values.size)`` ``True``: the
    set ``jax.lax.top_k(values, k)`` returns, in whose order ``-0.0`` ranks just below ``+0.0``.
  """
  n = values.size
  if k <= 0:
    return np.zeros(n, bool)
  threshold = np.partition(values, n - k)[n - k]  # The k-th largest (a zero of either sign).
  if threshold == 0:
    # Zeros straddle the threshold: +0.0 and -0.0 are two values here, +0.0 first.
    zero = values == 0
    negative_zero = zero & np.signbit(values)
    keep = (values > 0) | (zero & ~negative_zero)
    if np.count_nonzero(keep) < k:
      keep |= negative_zero
  else:
    keep = values >= threshold
  surplus = np.count_nonzero(keep) - k  # Keys tied at the threshold beyond κ (rare but real).
  if surplus:
    tied = values == threshold
    if threshold == 0:  # The lowest value kept: -0.0 if any, else +0.0.
      tied &= np.signbit(values) if np.any(keep & negative_zero) else ~np.signbit(values)
    tied = np.flatnonzero(tied)
    keep[tied[len(tied) - surplus :]] = False
  return keep


def select_host(
  flat_scores: np.ndarray,
  within_flat: np.ndarray | None,
  reserve: np.ndarray | None,
  budgets: np.ndarray,
  *,
  sizes: tuple[int, ...],
  per_leaf: bool,
) -> np.ndarray:
  """The flat mask of :func:`select_device`, computed in NumPy with floats instead of keys.

  Excluded scores become ``-inf`` and reserved ones ``+inf`` (the scores are finite), which is
  what the device path's lowest and highest keys do, so both return the same mask.

  Args:
    flat_scores: the prunable scores, flat, leaf after leaf (finite).
    within_flat: ``bool``, shaped like ``flat_scores``: only ``True`` coordinates may be kept;
      ``None`` allows all.
    reserve: per leaf, how many of its best are kept first; ``None`` reserves nothing.
    budgets: ``[κ]`` (global) or one ``κ_l`` per leaf (``per_leaf``).
    sizes: the number of scores of each leaf, in order.
    per_leaf: whether ``budgets`` holds one budget per leaf.

  Returns:
    A flat ``bool`` NumPy mask with exactly ``Σ budgets`` ``True``.
  """
  values = np.asarray(flat_scores)
  bounds = np.concatenate([[0], np.cumsum(sizes)])
  segments = list(itertools.pairwise(bounds))
  if within_flat is not None:
    values = np.where(within_flat, values, -np.inf)
  if reserve is not None:
    values = values.copy() if within_flat is None else values
    for (start, stop), k in zip(segments, np.asarray(reserve), strict=True):
      values[start:stop][introselect_top_k(values[start:stop], int(k))] = np.inf
  budgets = np.asarray(budgets)
  if not per_leaf:
    return introselect_top_k(values, int(budgets[0]))
  keep = np.empty(values.size, bool)
  for (start, stop), k in zip(segments, budgets, strict=True):
    keep[start:stop] = introselect_top_k(values[start:stop], int(k))
  return keep


# --------------------------------------------------------------------------------------------
# On the device: a radix select in XLA.


def sortable_keys(flat: jax.Array) -> jax.Array:
  """Unsigned integers ordered as the floats ``flat`` are (IEEE bit patterns, made monotone).

  Non-negative floats get their sign bit set, negative ones all bits flipped, so integer order
  is float order, with ``-0.0`` just below ``+0.0``: the total order ``lax.top_k`` sorts by.

  Args:
    flat: float32 or float64 scores.

  Returns:
    ``uint32`` or ``uint64`` keys (the width of ``flat``'s dtype), shaped like ``flat``.
  """
  bits = jax.lax.bitcast_convert_type(flat, _UINT[flat.dtype.itemsize])
  top = jnp.array(1, bits.dtype) << (8 * flat.dtype.itemsize - 1)
  return jnp.where(bits & top, ~bits, bits | top)


def radix_top_k(
  keys: jax.Array, segment_ids: np.ndarray | None, starts: np.ndarray, budgets: jax.Array
) -> jax.Array:
  """In each segment, the ``budgets[l]`` largest keys, ties to the lower index (``top_k``'s rule).

  Radix selection: the threshold ``T_l``, the largest value with at least ``budgets[l]`` keys
  ``>= T_l`` in segment ``l``, is built bit by bit from the top (one counting pass per bit, no
  sort); then every key above ``T_l`` is kept, plus the first ``budgets[l] - #(> T_l)`` keys
  equal to it. Budgets are traced values, so one compilation serves every κ.

  Args:
    keys: unsigned keys (:func:`sortable_keys`), flat, segment after segment.
    segment_ids: each key's segment; ``None`` for a single segment (one global budget).
    starts: the index of each segment's first key (a host array; ``[0]`` for one segment).
    budgets: ``int32``, one per segment, each at most its segment's size.

  Returns:
    A ``bool`` array shaped like ``keys`` with exactly ``budgets[l]`` ``True`` in segment ``l``.
  """
  num_segments = len(starts)
  bits = 8 * keys.dtype.itemsize
  if num_segments == 1:  # Global: plain sums and broadcasts, no scatter or gather.
    seg = np.zeros((), np.int32)

    def count(mask):
      return jnp.sum(mask, dtype=jnp.int32, keepdims=True)
  else:
    seg = jnp.asarray(segment_ids)

    def count(mask):
      return jax.ops.segment_sum(mask.astype(jnp.int32), seg, num_segments=num_segments)

  def add_bit(i, threshold):
    candidate = threshold | (jnp.array(1, keys.dtype) << (bits - 1 - i).astype(keys.dtype))
    return jnp.where(count(keys >= candidate[seg]) >= budgets, candidate, threshold)

  threshold = jax.lax.fori_loop(0, bits, add_bit, jnp.zeros((num_segments,), keys.dtype))
  above = keys > threshold[seg]
  tied = keys == threshold[seg]
  # Rank of each tied key among the tied keys of its segment (exclusive running count).
  running = jnp.cumsum(tied.astype(jnp.int32))
  before_segment = jnp.concatenate([jnp.zeros((1,), jnp.int32), running])[jnp.asarray(starts)]
  tie_rank = running - tied - before_segment[seg]
  return above | (tied & (tie_rank < (budgets - count(above))[seg]))


@functools.partial(jax.jit, static_argnames=("sizes", "per_leaf"))
def select_device(
  flat_scores: jax.Array,
  within_flat: jax.Array | None,
  reserve: jax.Array | None,
  budgets: jax.Array,
  *,
  sizes: tuple[int, ...],
  per_leaf: bool,
) -> jax.Array:
  """The flat mask: ``budgets`` per leaf (``per_leaf``) or one global budget, in XLA.

  Scores outside ``within`` can never be kept (the lowest key, below any finite score's), and
  each leaf's top-``reserve_l`` are always kept (the highest key); the scores are finite
  (checked before), κ ≤ candidates and Σ reserve ≤ κ, so both rules hold exactly. Compiled once
  per ``sizes`` and ``per_leaf``: the budgets and reserves are data.

  Args:
    flat_scores: the prunable scores, flat, leaf after leaf (finite, float32 or float64).
    within_flat: ``bool``, shaped like ``flat_scores``: only ``True`` coordinates may be kept;
      ``None`` allows all.
    reserve: ``int32`` per leaf, how many of its best are kept first; ``None`` reserves nothing.
    budgets: ``int32``, ``[κ]`` (global) or one ``κ_l`` per leaf (``per_leaf``).
    sizes: the number of scores of each leaf, in order.
    per_leaf: whether ``budgets`` holds one budget per leaf.

  Returns:
    A flat ``bool`` mask with exactly ``Σ budgets`` ``True``, the same as :func:`select_host`'s.
  """
  keys = sortable_keys(flat_scores)
  leaf_ids = np.repeat(np.arange(len(sizes)), sizes)
  leaf_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  if within_flat is not None:
    keys = jnp.where(within_flat, keys, jnp.zeros((), keys.dtype))
  if reserve is not None:
    reserved = radix_top_k(keys, leaf_ids, leaf_starts, reserve)
    keys = jnp.where(reserved, jnp.array(np.iinfo(keys.dtype).max, keys.dtype), keys)
  if per_leaf:
    return radix_top_k(keys, leaf_ids, leaf_starts, budgets)
  return radix_top_k(keys, None, np.zeros(1, np.int64), budgets)
