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

The selection itself is :mod:`snip_jax.topk`'s: exactly the set ``jax.lax.top_k`` keeps (the κ
largest, ties to the lower index), found without sorting, in NumPy when the scores are on the CPU
and with a radix select compiled by XLA when they are on an accelerator. BENCHMARKS.md
("Selection at scale") compares both with ``lax.top_k`` and ``np.partition``.

Two options restrict the choice without changing κ:

* ``min_kept_per_layer=m`` guards against layer collapse (a layer with no connection left cuts
  every path through the network): every prunable leaf keeps at least ``min(m, n_l)``
  coordinates. Per layer it is the lower bound ``lo_l`` of the allocation; in global mode each
  leaf's top-``min(m, n_l)`` are reserved before the global top-κ.
* ``within`` (a mask tree) lets only its ``True`` coordinates be kept, so iterative pruning
  never revives a pruned weight.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import masks, topk

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


def check_min_kept(sizes: Sequence[int], sparsity: float, min_kept_per_layer: int) -> None:
  """Raises ``ValueError`` (naming the fix) when leaves of ``sizes`` cannot each keep
  ``min(min_kept_per_layer, size)`` within the κ of ``sparsity``: checkable before any score."""
  min_kept = validate_min_kept(min_kept_per_layer)
  kappa = num_kept(sum(int(n) for n in sizes), sparsity)
  _check_floor(sum(min(min_kept, int(n)) for n in sizes), kappa, min_kept)


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
    within = masks.conform_mask(scores, within)

  # The candidates: what filter_fn admits among the leaves the scoring scored (integer leaves
  # are the others: masks.not_a_candidate).
  prunable = jax.tree.map_with_path(lambda path, s: masks.is_prunable(path, s, filter_fn), scores)
  leaves, treedef = jax.tree.flatten(scores)
  flags = jax.tree.leaves(prunable)
  # On the CPU the selection runs in NumPy, on zero-copy views of the scores.
  on_host = topk.on_host(leaves)
  xp = np if on_host else jnp
  chosen = [topk.flatten_scores(leaf, xp) for leaf, keep in zip(leaves, flags, strict=True) if keep]
  if not chosen:
    raise ValueError("No prunable leaves: filter_fn rejected every leaf of the scores tree.")
  flat = chosen[0] if len(chosen) == 1 else xp.concatenate(chosen)
  _check_scores(flat, xp)
  kappa = num_kept(flat.size, sparsity)

  sizes = tuple(int(leaf.size) for leaf in chosen)
  within_flat, candidates = None, list(sizes)
  if within is not None:
    within_flat, candidates = _candidates(within, flags, xp)
    if kappa > sum(candidates):
      raise ValueError(
        f"sparsity={sparsity} keeps κ={kappa} connections but `within` allows only "
        f"{sum(candidates)} of the {flat.size} prunable ones; raise the sparsity to at least "
        f"{1.0 - sum(candidates) / flat.size:.6g} or widen `within`."
      )
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
    flat_mask = topk.select_host(
      flat, within_flat, reserve, budgets, sizes=sizes, per_leaf=per_leaf
    )
  else:
    reserve = None if reserve is None else jnp.asarray(reserve)
    flat_mask = topk.select_device(
      flat, within_flat, reserve, jnp.asarray(budgets, jnp.int32), sizes=sizes, per_leaf=per_leaf
    )
  return _unflatten_mask(flat_mask, sizes, leaves, flags, treedef, xp)


def _check_scores(flat: Any, xp: Any) -> None:
  """Refuses non-finite scores and warns when every score is zero (see :func:`top_k_mask`)."""
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
      stacklevel=3,  # The caller of top_k_mask.
    )


def _candidates(within: PyTree, flags: Sequence[bool], xp: Any) -> tuple[Any, list[int]]:
  """``within``'s prunable leaves, flat and concatenated, and each leaf's number of candidates."""
  within_leaves = [
    xp.ravel(xp.asarray(w)).astype(bool)
    for w, keep in zip(jax.tree.leaves(within), flags, strict=True)
    if keep
  ]
  return xp.concatenate(within_leaves), [int(w.sum()) for w in within_leaves]


def _unflatten_mask(
  flat_mask: Any,
  sizes: tuple[int, ...],
  leaves: Sequence[Any],
  flags: Sequence[bool],
  treedef: Any,
  xp: Any,
) -> PyTree:
  """The flat prunable mask back in the scores' tree, all-``True`` on the other leaves."""
  pieces = iter(xp.split(flat_mask, np.cumsum(sizes)[:-1]))
  mask_leaves = [
    jnp.asarray(next(pieces).reshape(np.shape(leaf))) if keep else jnp.ones(np.shape(leaf), bool)
    for leaf, keep in zip(leaves, flags, strict=True)
  ]
  return jax.tree.unflatten(treedef, mask_leaves)
