"""Scores -> mask: exact top-κ over the prunable connections, globally or per layer.

``κ = round((1 - sparsity) · N)`` where ``N`` counts the prunable coordinates. Whatever the
options, the mask keeps exactly κ prunable coordinates; they only change how κ is shared out:

* ``"global"`` (the paper's choice, the default): the prunable score leaves are flattened in
  tree order and concatenated, and the κ largest are kept. Ties are broken by that flat order
  (the lower index first, as ``jax.lax.top_k`` does), so the mask is a deterministic function
  of the scores.
* ``"uniform"``: every prunable leaf gets the same density, ``κ / N`` (that is ``1 - sparsity``
  up to the rounding of κ), and keeps its own top-κ_l.
* ``"erk"`` (Erdős-Rényi-Kernel, Evci et al. 2020, "Rigging the Lottery"): the density of leaf
  ``l`` is proportional to ``sum(shape_l) / prod(shape_l)``: ``(h + w + c_in + c_out) /
  (h · w · c_in · c_out)`` for a conv kernel, ``(in + out) / (in · out)`` for a dense one.
  Small layers therefore stay denser. Densities are capped at 1: a layer that would exceed it
  is kept dense and the rest is shared among the others.

The per-layer budgets κ_l come from one exact water-filling on the host (:func:`layer_budgets`):
real targets ``t_l = clip(ε · w_l, lo_l, hi_l)`` with the single scale ``ε`` solved in rational
arithmetic so that ``Σ t_l = κ``, then floors plus the largest remainders (ties by tree order).

The selection never sorts. Where the scores live decides how it runs (both give exactly
``lax.top_k``'s set, the κ largest with ties to the lower index):

* on an accelerator (GPU, TPU), a radix select compiled by XLA: the scores' IEEE bit patterns
  are mapped to unsigned integers in the same order, the κ-th largest is found one bit at a
  time from the top (one counting pass over the scores per bit: 32 for float32, each cheap
  and parallel there), and the keys equal to it are kept in index order until κ is reached.
  κ is a traced value, so iterative pruning compiles it once for all its rounds;
* on CPU, the same rules in NumPy on the (zero-copy) host view of the scores: one introselect
  (``np.partition``) finds the κ-th largest value ``t``, one pass keeps ``scores >= t``, and
  only if more than κ tie at ``t`` are the surplus ties dropped from the highest index down.
  XLA:CPU runs these counting passes far slower than NumPy: over VGG-D's 15.2M scores the
  radix select takes about 15x as long as the introselect, and ``lax.top_k``, which sorts
  single-threaded, seconds (BENCHMARKS.md, "Selection at scale").

Two options restrict the choice without changing κ:

* ``min_kept_per_layer=m`` guards against layer collapse (a layer with no connection left cuts
  every path through the network): every prunable leaf keeps at least ``min(m, n_l)``
  coordinates. Per layer it is the lower bound ``lo_l`` of the allocation; in global mode each
  leaf's top-``min(m, n_l)`` are reserved before the global top-κ.
* ``within`` (a mask tree) lets only its ``True`` coordinates be kept, so iterative pruning
  never revives a pruned weight.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import masks

PyTree = Any


class ZeroScoresWarning(UserWarning):
  """Every prunable score is zero, so the mask is arbitrary (see :func:`top_k_mask`)."""


#: The ``distribution`` choices of :func:`top_k_mask`.
DISTRIBUTIONS = ("global", "uniform", "erk")


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
      f"sparsity below {1.0 - 0.5 / max(num_prunable, 1):.6g} so that at least one weight is "
      "kept."
    )
  return kappa


def validate_distribution(distribution: Any) -> str:
  """Returns ``distribution``, or raises ``ValueError`` naming the choices."""
  if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
    raise ValueError(
      f"Unknown distribution {distribution!r}: distribution must be one of {DISTRIBUTIONS}."
    )
  return distribution


def validate_min_kept(min_kept_per_layer: Any) -> int:
  """Returns ``min_kept_per_layer`` as an int, or raises ``ValueError`` unless it is one >= 0."""
  if isinstance(min_kept_per_layer, bool) or not isinstance(min_kept_per_layer, numbers.Integral):
    raise ValueError(
      f"min_kept_per_layer must be a non-negative int, got {min_kept_per_layer!r}; "
      "use 0 for no guard."
    )
  if min_kept_per_layer < 0:
    raise ValueError(
      f"min_kept_per_layer must be a non-negative int, got {min_kept_per_layer}; "
      "use 0 for no guard."
    )
  return int(min_kept_per_layer)


def _check_floor(floor_total: int, kappa: int, min_kept_per_layer: int) -> None:
  if floor_total > kappa:
    raise ValueError(
      f"min_kept_per_layer={min_kept_per_layer} asks for {floor_total} connections over all "
      f"prunable layers but this sparsity keeps only κ={kappa}; lower min_kept_per_layer or "
      "the sparsity."
    )


def _raw_weights(shapes: Sequence[tuple[int, ...]], distribution: str) -> list[int]:
  """Integer ``w_l`` with the target kept count ``t_l = ε · w_l`` (before clipping).

  Uniform keeps ``ε · n_l``. ERK's density ``ε · sum(shape) / prod(shape)`` times the size
  ``n_l = prod(shape)`` keeps ``ε · sum(shape)``; a 0-d leaf counts as a size-1 vector. Both are
  integers, which keeps the allocation exact.
  """
  weights = []
  for shape in shapes:
    size = math.prod(shape)
    if size == 0:
      weights.append(0)
    elif distribution == "uniform":
      weights.append(size)
    else:
      weights.append(sum(shape) if shape else 1)
  return weights


def _allocate(
  weights: Sequence[int], kappa: int, lo: Sequence[int], hi: Sequence[int]
) -> list[int]:
  """Integers ``lo_l ≤ κ_l ≤ hi_l`` summing to ``kappa``, proportional to ``weights`` where free.

  Solves ``Σ clip(ε · w_l, lo_l, hi_l) = κ`` for ``ε`` exactly: the sum is piecewise linear and
  non-decreasing in ``ε`` with kinks at ``lo_l / w_l`` and ``hi_l / w_l``, so a search over the
  sorted kinks finds the linear piece that holds κ. Rational arithmetic keeps it exact and
  platform independent (a float bisection leaves integer targets at 2.9999..., which would hand
  the rounding to whichever leaf comes first). Callers check ``Σ lo ≤ κ ≤ Σ hi``.
  """

  def targets(eps: Fraction) -> list[Fraction]:
    # A leaf with w_l = 0 cannot grow with ε: it sits at its floor.
    return [
      min(max(eps * w, Fraction(a)), Fraction(b)) for w, a, b in zip(weights, lo, hi, strict=True)
    ]

  def total(eps: Fraction) -> Fraction:
    return sum(targets(eps), Fraction(0))

  kinks = sorted(
    {Fraction(0)}
    | {Fraction(bound, w) for w, a, b in zip(weights, lo, hi, strict=True) if w for bound in (a, b)}
  )
  if total(kinks[-1]) < kappa:
    raise AssertionError(f"cannot place κ={kappa} within the per-layer bounds")
  # Smallest kink whose total reaches κ; f is linear between it and the kink before.
  left, right = 0, len(kinks) - 1
  while left < right:
    mid = (left + right) // 2
    if total(kinks[mid]) >= kappa:
      right = mid
    else:
      left = mid + 1
  eps = kinks[left]
  if left > 0 and total(eps) != kappa:
    a, b = kinks[left - 1], kinks[left]
    fa, fb = total(a), total(b)
    eps = a + (kappa - fa) * (b - a) / (fb - fa)
  real = targets(eps)
  budgets = [math.floor(t) for t in real]
  # Σ real = κ exactly, so the shortfall is the sum of the fractional parts: fewer than the
  # leaves with a positive fraction, each of which has room for one more (floor < t ≤ hi).
  shortfall = kappa - sum(budgets)
  order = sorted(range(len(real)), key=lambda i: (-(real[i] - budgets[i]), i))
  for i in order[:shortfall]:
    budgets[i] += 1
  if sum(budgets) != kappa:
    raise AssertionError(f"budgets {budgets} do not sum to κ={kappa}")
  return budgets


def layer_budgets(
  shapes: Sequence[tuple[int, ...]],
  sparsity: float,
  distribution: str,
  min_kept_per_layer: int = 0,
) -> list[int]:
  """κ_l, the number of coordinates each prunable leaf keeps under a per-layer distribution.

  Args:
    shapes: the shapes of the prunable leaves, in tree order.
    sparsity: fraction of all their coordinates to remove, in ``[0, 1)``.
    distribution: ``"uniform"`` or ``"erk"`` (``"global"`` budgets follow the scores; use
      :func:`top_k_mask`).
    min_kept_per_layer: each leaf keeps at least ``min(min_kept_per_layer, n_l)``.

  Returns:
    One int per shape, each in ``[min(min_kept_per_layer, n_l), n_l]``, summing exactly to
    ``κ = round((1 - sparsity) · Σ n_l)``.

  Raises:
    ValueError: bad sparsity, distribution or ``min_kept_per_layer``, or a guard that needs more
      than κ connections.
  """
  distribution = validate_distribution(distribution)
  if distribution == "global":
    raise ValueError(
      'distribution="global" has no fixed per-layer budgets (they follow the scores); use '
      'top_k_mask, or "uniform" / "erk" here.'
    )
  min_kept = validate_min_kept(min_kept_per_layer)
  shapes = [tuple(int(d) for d in shape) for shape in shapes]
  sizes = [math.prod(shape) for shape in shapes]
  if sum(sizes) == 0:
    raise ValueError("layer_budgets needs at least one non-empty shape.")
  kappa = num_kept(sum(sizes), sparsity)
  lo = [min(min_kept, n) for n in sizes]
  _check_floor(sum(lo), kappa, min_kept)
  return _allocate(_raw_weights(shapes, distribution), kappa, lo, sizes)


def _sortable_keys(flat: jax.Array) -> jax.Array:
  """Unsigned integers ordered as the floats ``flat`` are (IEEE bit patterns, made monotone).

  Non-negative floats get their sign bit set, negative ones all bits flipped, so integer order
  is float order, with ``-0.0`` just below ``+0.0``: the total order ``lax.top_k`` sorts by.
  """
  bits = jax.lax.bitcast_convert_type(flat, _UINT[flat.dtype.itemsize])
  top = jnp.array(1, bits.dtype) << (8 * flat.dtype.itemsize - 1)
  return jnp.where(bits & top, ~bits, bits | top)


_UINT = {4: jnp.uint32, 8: jnp.uint64}


def _top_per_segment(
  keys: jax.Array, segment_ids: np.ndarray | None, starts: np.ndarray, budgets: jax.Array
) -> jax.Array:
  """In each segment, the ``budgets[l]`` largest keys, ties to the lower index (``top_k``'s rule).

  Radix selection: the threshold ``T_l``, the largest value with at least ``budgets[l]`` keys
  ``>= T_l`` in segment ``l``, is built bit by bit from the top (one counting pass per bit, no
  sort); then every key above ``T_l`` is kept, plus the first ``budgets[l] - #(> T_l)`` keys
  equal to it. Budgets are traced values, so one compilation serves every κ.
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


def _top_numpy(values: np.ndarray, k: int) -> np.ndarray:
  """The ``k`` largest of ``values``, ties to the lower index: one introselect, no sort.

  The order is ``lax.top_k``'s, in which ``-0.0`` ranks just below ``+0.0``.
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


def _select_numpy(
  flat_scores: np.ndarray,
  within_flat: np.ndarray | None,
  reserve: np.ndarray | None,
  budgets: np.ndarray,
  *,
  sizes: tuple[int, ...],
  per_leaf: bool,
) -> np.ndarray:
  """:func:`_select` in NumPy, on the host: the same rules, with floats instead of keys.

  Excluded scores become ``-inf`` and reserved ones ``+inf`` (the scores are finite), which
  is what the device path's lowest and highest keys do.
  """
  values = np.asarray(flat_scores)
  bounds = np.concatenate([[0], np.cumsum(sizes)])
  segments = list(itertools.pairwise(bounds))
  if within_flat is not None:
    values = np.where(within_flat, values, -np.inf)
  if reserve is not None:
    values = values.copy() if within_flat is None else values
    for (start, stop), k in zip(segments, np.asarray(reserve), strict=True):
      values[start:stop][_top_numpy(values[start:stop], int(k))] = np.inf
  budgets = np.asarray(budgets)
  if not per_leaf:
    return _top_numpy(values, int(budgets[0]))
  keep = np.empty(values.size, bool)
  for (start, stop), k in zip(segments, budgets, strict=True):
    keep[start:stop] = _top_numpy(values[start:stop], int(k))
  return keep


@functools.partial(jax.jit, static_argnames=("sizes", "per_leaf"))
def _select(
  flat_scores: jax.Array,
  within_flat: jax.Array | None,
  reserve: jax.Array | None,
  budgets: jax.Array,
  sizes: tuple[int, ...],
  per_leaf: bool,
) -> jax.Array:
  """The flat mask: ``budgets`` per leaf (``per_leaf``) or one global budget, in XLA.

  Scores outside ``within`` can never be kept (the lowest key, below any finite score's), and
  each leaf's top-``reserve_l`` are always kept (the highest key); the scores are finite
  (checked before), κ ≤ candidates and Σ reserve ≤ κ, so both rules hold exactly.
  """
  keys = _sortable_keys(flat_scores)
  leaf_ids = np.repeat(np.arange(len(sizes)), sizes)
  leaf_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  if within_flat is not None:
    keys = jnp.where(within_flat, keys, jnp.zeros((), keys.dtype))
  if reserve is not None:
    reserved = _top_per_segment(keys, leaf_ids, leaf_starts, reserve)
    keys = jnp.where(reserved, jnp.array(np.iinfo(keys.dtype).max, keys.dtype), keys)
  if per_leaf:
    return _top_per_segment(keys, leaf_ids, leaf_starts, budgets)
  return _top_per_segment(keys, None, np.zeros(1, np.int64), budgets)


def _flat_scores(leaf: Any, xp: Any) -> Any:
  flat = xp.ravel(xp.asarray(leaf))
  # Lower precision would create ties; float64 (with jax_enable_x64) stays float64.
  return flat.astype(jnp.promote_types(flat.dtype, jnp.float32), copy=False)


def _on_host(leaves: Sequence[Any]) -> bool:
  """Whether every array leaf is on the CPU (NumPy arrays, or JAX arrays on CPU devices)."""
  return all(
    all(d.platform == "cpu" for d in leaf.devices())
    for leaf in leaves
    if isinstance(leaf, jax.Array)
  )


def top_k_mask(
  scores: PyTree,
  sparsity: float,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
  distribution: str = "global",
  min_kept_per_layer: int = 0,
  within: PyTree | None = None,
) -> PyTree:
  """Keeps exactly κ prunable connections: the highest-scoring, globally or per layer.

  Call it outside ``jax.jit``: it validates its arguments and the scores on the host, computes
  any per-layer budgets there, then selects: in NumPy when the scores are on the CPU, with a
  compiled radix select otherwise (compiled once per set of leaf shapes; κ and the budgets are
  data). See the module docstring.

  Args:
    scores: a pytree shaped like the params (e.g. from
      :func:`snip_jax.sensitivity.connection_sensitivity`); larger means more important. Scores
      may be negative but must be finite.
    sparsity: fraction of prunable connections to remove, in ``[0, 1)``.
    filter_fn: which leaves are prunable; other leaves get an all-``True`` mask.
    distribution: how κ is shared among the prunable leaves: ``"global"`` (one top-κ over all
      of them), ``"uniform"`` (the same density per leaf) or ``"erk"`` (Erdős-Rényi-Kernel
      densities); see the module docstring.
    min_kept_per_layer: every prunable leaf keeps at least ``min(min_kept_per_layer, n_l)``
      coordinates (counting only candidates when ``within`` is given), a guard against layer
      collapse.
    within: optional mask tree shaped like ``scores``; only its ``True`` coordinates may be kept
      (its non-prunable leaves are ignored). ``None`` allows every coordinate.

  Returns:
    A ``bool`` mask pytree shaped like ``scores`` with exactly κ prunable coordinates ``True``.

  Raises:
    ValueError: bad sparsity, distribution, ``min_kept_per_layer`` or ``within``; no prunable
      leaves; non-finite scores; fewer candidates than κ; or a guard that needs more than κ.

  Warns:
    ZeroScoresWarning: every prunable score is zero (a dead network); the mask is still exact
      but keeps κ connections by position.
  """
  distribution = validate_distribution(distribution)
  min_kept = validate_min_kept(min_kept_per_layer)
  if within is not None:
    masks.check_mask(scores, within)

  prunable = masks.prunable_leaves(scores, filter_fn)
  leaves, treedef = jax.tree.flatten(scores)
  flags = jax.tree.leaves(prunable)
  # On the CPU the selection runs in NumPy, on zero-copy views of the scores.
  on_host = _on_host(leaves)
  xp = np if on_host else jnp
  chosen = [_flat_scores(leaf, xp) for leaf, keep in zip(leaves, flags, strict=True) if keep]
  if not chosen:
    raise ValueError("No prunable leaves: filter_fn rejected every leaf of the scores tree.")
  flat = chosen[0] if len(chosen) == 1 else xp.concatenate(chosen)
  finite = xp.isfinite(flat)
  if not bool(finite.all()):
    bad = flat.size - int(finite.sum())
    raise ValueError(
      f"{bad} of {flat.size} scores are NaN or infinite; refusing to build a mask from them. "
      "Check the initialisation and the scoring batch (an exploding init or a loss of NaN "
      "causes this)."
    )
  if not bool(flat.any()):
    warnings.warn(
      f"All {flat.size} prunable scores are zero: no gradient reaches the prunable weights (a "
      "dead network, e.g. every ReLU inactive, a saturated loss or zero-initialised weights). "
      "The mask keeps κ connections by position (ties go to the lower index), which says "
      "nothing about their importance; check the initialisation and the scoring batch.",
      ZeroScoresWarning,
      stacklevel=2,
    )
  kappa = num_kept(flat.size, sparsity)

  sizes = tuple(int(leaf.size) for leaf in chosen)
  within_flat = None
  candidates = list(sizes)
  if within is not None:
    within_leaves = [
      xp.ravel(xp.asarray(w)).astype(bool)
      for w, keep in zip(jax.tree.leaves(within), flags, strict=True)
      if keep
    ]
    candidates = [int(w.sum()) for w in within_leaves]
    if kappa > sum(candidates):
      raise ValueError(
        f"sparsity={sparsity} keeps κ={kappa} connections but `within` allows only "
        f"{sum(candidates)} of the {flat.size} prunable ones; raise the sparsity to at least "
        f"{1.0 - sum(candidates) / flat.size:.6g} or widen `within`."
      )
    within_flat = xp.concatenate(within_leaves)
  lo = tuple(min(min_kept, c) for c in candidates)
  _check_floor(sum(lo), kappa, min_kept)

  if distribution == "global":
    reserve = np.asarray(lo, np.int32) if any(lo) else None
    budgets = np.asarray([kappa], np.int32)
  else:
    shapes = [np.shape(leaf) for leaf, keep in zip(leaves, flags, strict=True) if keep]
    reserve = None  # The per-layer budgets already respect the floors.
    budgets = np.asarray(_allocate(_raw_weights(shapes, distribution), kappa, lo, candidates))
  per_leaf = distribution != "global"
  if on_host:
    flat_mask = _select_numpy(flat, within_flat, reserve, budgets, sizes=sizes, per_leaf=per_leaf)
  else:
    reserve = None if reserve is None else jnp.asarray(reserve)
    flat_mask = _select(
      flat, within_flat, reserve, jnp.asarray(budgets, jnp.int32), sizes, per_leaf
    )

  pieces = iter(xp.split(flat_mask, np.cumsum(sizes)[:-1]))
  mask_leaves = [
    jnp.asarray(next(pieces).reshape(np.shape(leaf))) if keep else jnp.ones(np.shape(leaf), bool)
    for leaf, keep in zip(leaves, flags, strict=True)
  ]
  return jax.tree.unflatten(treedef, mask_leaves)
