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
  is kept dense and the rest is shared among the others. Other shapes are taken as they are,
  as RigL's code takes them: an attention ``DenseGeneral``'s ``(in, heads, head_dim)`` gets
  ``(in + heads + head_dim) / (in · heads · head_dim)``, not the ``(in + heads · head_dim) /
  (in · heads · head_dim)`` of the same map as a dense kernel, and a stack of ``L`` layers in
  one leaf (``nn.scan``) is one leaf here, as in ``"uniform"`` and ``min_kept_per_layer``: give
  such models ``layer_sparsity`` or a reshaped score tree if that matters.

The per-layer budgets κ_l come from one exact water-filling on the host (:func:`layer_budgets`):
real targets ``t_l = clip(ε · w_l, lo_l, hi_l)`` with the single scale ``ε`` solved in rational
arithmetic so that ``Σ t_l = κ``, then floors plus the largest remainders (ties by tree order).

The selection itself is :mod:`snip_jax.topk`'s: exactly the set ``jax.lax.top_k`` keeps (the κ
largest, ties to the lower index), found without sorting, in NumPy when the scores are on the CPU
and with a radix select compiled by XLA when they are on an accelerator. BENCHMARKS.md
("Selection at scale") compares both with ``lax.top_k`` and ``np.partition``.

Two more ways to share κ out:

* ``"N:M"`` (e.g. ``"2:4"``, the pattern sparse tensor cores run): every group of ``M``
  consecutive inputs of a unit keeps exactly its ``N`` best: along ``in`` of a ``(in, out)``
  dense kernel, along ``c_in`` at each position of a ``(h, w, c_in, c_out)`` conv kernel (``M``
  must divide ``c_in``); a 1-D leaf is one unit. Other ranks are refused, as their input axes
  are not known (an attention ``DenseGeneral``'s ``(in, heads, head_dim)``). The sparsity is
  then ``1 - N/M`` and must be given as such, and every prunable leaf's inputs per unit must be
  a multiple of ``M`` (exclude the others with ``filter_fn``). Within a group, ties go to the
  lower index, as everywhere.
* ``layer_sparsity`` (a map from layer names to sparsities) fixes the sparsity of the layers it
  names: each keeps exactly ``round((1 - s_l) · n_l)`` of its own best, and the other prunable
  leaves share ``sparsity`` as ``distribution`` says. A name is a leaf's path
  (``"Dense_0/kernel"``) or a module's (``"Dense_0"``, every prunable leaf under it).

Two options restrict the choice without changing κ:

* ``min_kept_per_layer=m`` guards against layer collapse (a layer with no connection left cuts
  every path through the network): every prunable leaf keeps at least ``min(m, n_l)``
  coordinates. Per layer it is the lower bound ``lo_l`` of the allocation; in global mode each
  leaf's top-``min(m, n_l)`` are reserved before the global top-κ.
* ``within`` (a mask tree) lets only its ``True`` coordinates be kept, so iterative pruning
  never revives a pruned weight.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import masks, topk

PyTree = Any


class ZeroScoresWarning(UserWarning):
  """Every prunable score is zero, so the mask is arbitrary (see :func:`top_k_mask`)."""


#: The named ``distribution`` choices of :func:`top_k_mask`; ``"N:M"`` strings (:func:`n_m`)
#: are the others.
DISTRIBUTIONS = ("global", "uniform", "erk")
#: The most candidates one selection takes: it counts them in ``int32`` (JAX's default integer).
MAX_CANDIDATES = int(np.iinfo(np.int32).max)
_N_M = re.compile(r"([0-9]+):([0-9]+)")


def validate_sparsity(sparsity: Any) -> float:
  """Returns ``sparsity`` as a float, or raises ``ValueError`` unless it lies in ``[0, 1)``: a
  Python or NumPy number, or a 0-d array of one (``jnp.asarray(0.9)``)."""
  if isinstance(sparsity, (np.ndarray, jax.Array)) and sparsity.ndim == 0:
    sparsity = sparsity.item()
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
  if isinstance(distribution, str):
    if distribution in DISTRIBUTIONS:
      return distribution
    match = _N_M.fullmatch(distribution)
    if match and 1 <= int(match[1]) < int(match[2]):
      return distribution
    if match:
      raise ValueError(
        f"distribution {distribution!r} must keep N of every M with 1 <= N < M, e.g. '2:4'."
      )
  raise ValueError(
    f"Unknown distribution {distribution!r}: distribution must be one of {DISTRIBUTIONS} or "
    "'N:M' with 1 <= N < M (e.g. '2:4': 2 of every 4 consecutive inputs)."
  )


def n_m(distribution: str) -> tuple[int, int] | None:
  """``(N, M)`` of an ``"N:M"`` distribution, ``None`` for a named one.

  Raises:
    ValueError: ``distribution`` is neither.
  """
  match = _N_M.fullmatch(validate_distribution(distribution))
  return (int(match[1]), int(match[2])) if match else None


def check_n_m_sparsity(distribution: str, sparsity: float) -> None:
  """Raises ``ValueError`` (naming the fix) when ``distribution`` is ``"N:M"`` and ``sparsity``
  is not its ``1 - N/M``; does nothing for a named distribution."""
  pattern = n_m(distribution)
  if pattern is None:
    return
  n, m = pattern
  if abs(validate_sparsity(sparsity) - (1 - n / m)) > 1e-9:
    raise ValueError(
      f"distribution {distribution!r} keeps {n} of every {m} weights, a sparsity of "
      f"{1 - n / m:.6g}, but sparsity={sparsity}; set sparsity={1 - n / m:.6g}."
    )


def validate_layer_sparsity(layer_sparsity: Any) -> dict[str, float]:
  """``layer_sparsity`` as a ``{name: sparsity}`` dict, each sparsity checked; raises
  ``ValueError`` naming the fix.

  Accepts a mapping or its text form ``"Dense_0=0.5,Dense_2/kernel=0.9"`` (a config field's).
  """
  if isinstance(layer_sparsity, str):
    pairs = {}
    for item in filter(None, (part.strip() for part in layer_sparsity.split(","))):
      name, sep, value = item.partition("=")
      try:
        number = float(value)
      except ValueError:
        number = None
      if not sep or not name.strip() or number is None:
        raise ValueError(
          f"layer_sparsity {layer_sparsity!r}: {item!r} is not NAME=SPARSITY; write e.g. "
          "'Dense_0=0.5,Dense_2/kernel=0.9'."
        ) from None
      if name.strip() in pairs:
        raise ValueError(f"layer_sparsity {layer_sparsity!r} names {name.strip()!r} twice.")
      pairs[name.strip()] = number
    layer_sparsity = pairs
  if not isinstance(layer_sparsity, Mapping) or not layer_sparsity:
    raise ValueError(
      f"layer_sparsity must map layer names to sparsities, e.g. {{'Dense_0': 0.5}}, got "
      f"{layer_sparsity!r}."
    )
  result = {}
  for name, value in layer_sparsity.items():
    if not isinstance(name, str) or not name:
      raise ValueError(f"layer_sparsity's names must be layer paths like 'Dense_0', got {name!r}.")
    try:
      result[name] = validate_sparsity(value)
    except ValueError as e:
      raise ValueError(f"layer_sparsity[{name!r}]: {e}") from None
  return result


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
  if distribution not in ("uniform", "erk"):
    raise ValueError(
      f"distribution={distribution!r} has no per-layer budgets to compute here (global ones "
      "follow the scores, N:M ones are N/M of every leaf); use top_k_mask, or 'uniform' / "
      "'erk' here."
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
  layer_sparsity: Mapping[str, float] | str | None = None,
) -> PyTree:
  """Keeps exactly κ prunable connections: the highest-scoring, globally or per layer.

  Call it outside ``jax.jit``: it validates its arguments and the scores on the host, computes
  any per-layer budgets there, then selects: in NumPy when the scores are on the CPU, with a
  compiled radix select otherwise (compiled once per set of leaf shapes; κ and the budgets are
  data). See the module docstring.

  Args:
    scores: a pytree shaped like the params (e.g. from
      :func:`snip_jax.sensitivity.connection_sensitivity`); larger means more important. Scores
      may be negative but must be finite and floating point: an integer leaf is never a
      candidate (the criteria mark the leaves they left out with integer zeros).
    sparsity: fraction of prunable connections to remove, in ``[0, 1)`` (of those that
      ``layer_sparsity`` does not name, when it is given; ``1 - N/M`` for ``"N:M"``).
    filter_fn: which leaves are prunable; other leaves get an all-``True`` mask.
    distribution: how κ is shared among the prunable leaves: ``"global"`` (one top-κ over all
      of them), ``"uniform"`` (the same density per leaf), ``"erk"`` (Erdős-Rényi-Kernel
      densities) or ``"N:M"`` (``N`` of every ``M`` consecutive inputs of a unit); see the
      module docstring.
    min_kept_per_layer: every prunable leaf keeps at least ``min(min_kept_per_layer, n_l)``
      coordinates (counting only candidates when ``within`` is given), a guard against layer
      collapse.
    within: optional mask tree shaped like ``scores``; only its ``True`` coordinates may be kept
      (its non-prunable leaves are ignored). ``None`` allows every coordinate.
    layer_sparsity: optional ``{name: sparsity}`` (or ``"name=sparsity,..."``): each prunable
      leaf a name matches (its path, or a module above it) keeps exactly
      ``round((1 - s) · n_l)`` of its own best; the others share ``sparsity``.

  Returns:
    A ``bool`` mask pytree shaped like ``scores`` with exactly κ prunable coordinates ``True``.

  Raises:
    ValueError: bad sparsity, distribution, ``min_kept_per_layer``, ``within`` or
      ``layer_sparsity``; no prunable leaves; non-finite scores; fewer candidates than κ; a guard
      that needs more than κ; an ``"N:M"`` leaf whose inputs are not groups of ``M``.

  Warns:
    ZeroScoresWarning: every prunable score is zero (a dead network); the mask is still exact
      but keeps κ connections by position.
  """
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((scores, within))):
    raise ValueError(
      "top_k_mask validates and budgets on the host, so it cannot run under jax.jit (or "
      "another transformation): call it outside, on the scores the jitted function returns."
    )
  distribution = validate_distribution(distribution)
  min_kept = validate_min_kept(min_kept_per_layer)
  if within is not None:
    within = masks.conform_mask(scores, within)
  if layer_sparsity is not None:
    return _with_layer_sparsity(
      scores, sparsity, filter_fn, distribution, min_kept, within, layer_sparsity
    )
  prepared = _prepare(scores, filter_fn, within)
  kappa = num_kept(prepared.flat.size, sparsity)
  pattern = n_m(distribution)
  if pattern is not None:
    check_n_m_sparsity(distribution, sparsity)
    if within is not None:
      raise ValueError(
        f"distribution {distribution!r} selects in one shot: it cannot be restricted to "
        "`within` (iterative pruning); prune in one round."
      )
    return _n_m_mask(prepared, pattern, min_kept)
  _check_candidates(prepared, kappa, sparsity)
  lo = tuple(min(min_kept, c) for c in prepared.candidates)
  _check_floor(sum(lo), kappa, min_kept)
  if distribution == "global":
    reserve = np.asarray(lo, np.int32) if any(lo) else None
    budgets = np.asarray([kappa], np.int32)
  else:
    reserve = None  # The per-layer budgets already respect the floors.
    raw = _raw_weights(prepared.shapes, distribution)
    budgets = np.asarray(_allocate(raw, kappa, lo, prepared.candidates))
  return _select(prepared, reserve, budgets, per_leaf=distribution != "global")


def top_k_like(
  scores: PyTree,
  reference: PyTree,
  *,
  filter_fn: masks.FilterFn = masks.kernels,
) -> PyTree:
  """Keeps in every prunable leaf as many of its highest-scoring coordinates as ``reference``
  keeps there: a mask with ``reference``'s exact per-layer counts, chosen by ``scores``.

  E.g. random scores give a random mask with another mask's layer-wise densities
  (:func:`snip_jax.sanity.layerwise_random`).

  Args:
    scores: a pytree shaped like the params; larger means more important (finite).
    reference: a mask pytree shaped like ``scores``.
    filter_fn: which leaves are prunable; other leaves get an all-``True`` mask.

  Returns:
    A ``bool`` mask pytree shaped like ``scores``.
  """
  reference = masks.conform_mask(scores, reference)
  prepared = _prepare(scores, filter_fn, None)
  counts = [
    int(np.count_nonzero(np.asarray(r)))
    for r, keep in zip(jax.tree.leaves(reference), prepared.flags, strict=True)
    if keep
  ]
  if sum(counts) < 1:
    raise ValueError("The reference mask keeps no prunable connection; nothing to match.")
  return _select(prepared, None, np.asarray(counts, np.int64), per_leaf=True)


def top_k_per_layer(
  scores: PyTree,
  budgets: Sequence[int],
  *,
  filter_fn: masks.FilterFn = masks.kernels,
  within: PyTree | None = None,
) -> PyTree:
  """Keeps the ``budgets[l]`` highest-scoring coordinates of prunable leaf ``l`` (tree order),
  among those ``within`` allows: exact per-layer counts, ties to the lower index.

  The per-layer step of the methods that change a mask during training
  (:mod:`snip_jax.dynamic`); a budget may be 0.

  Args:
    scores: a pytree shaped like the params; larger means more important (finite).
    budgets: one count per prunable leaf, in tree order.
    filter_fn: which leaves are prunable; other leaves get an all-``True`` mask.
    within: optional mask tree; only its ``True`` coordinates may be kept.

  Returns:
    A ``bool`` mask pytree shaped like ``scores``.

  Raises:
    ValueError: a budget count that does not match the prunable leaves, a negative budget, or
      one above what ``within`` allows in its leaf.
  """
  if within is not None:
    within = masks.conform_mask(scores, within)
  prepared = _prepare(scores, filter_fn, within, warn_depth=None)
  budgets = [int(b) for b in budgets]
  if len(budgets) != len(prepared.chosen) or min(budgets, default=0) < 0:
    raise ValueError(
      f"top_k_per_layer needs one non-negative budget per prunable leaf "
      f"({len(prepared.chosen)}: {prepared.prunable_names}), got {budgets}."
    )
  return _select(prepared, None, np.asarray(budgets, np.int64), per_leaf=True)


@dataclasses.dataclass(frozen=True)
class _Prepared:
  """A scores tree ready for selection: its prunable leaves flat, concatenated and checked."""

  leaves: list[Any]
  treedef: Any
  names: list[str]  # Every leaf's path name, in tree order.
  flags: list[bool]  # Whether each leaf is prunable.
  chosen: list[Any]  # The prunable leaves, flat.
  flat: Any
  within_flat: Any
  candidates: list[int]  # Per prunable leaf, the coordinates `within` allows.
  on_host: bool

  @property
  def xp(self) -> Any:
    return np if self.on_host else jnp

  @property
  def sizes(self) -> tuple[int, ...]:
    return tuple(int(leaf.size) for leaf in self.chosen)

  @property
  def shapes(self) -> list[tuple[int, ...]]:
    return [np.shape(leaf) for leaf, keep in zip(self.leaves, self.flags, strict=True) if keep]

  @property
  def prunable_names(self) -> list[str]:
    return [name for name, keep in zip(self.names, self.flags, strict=True) if keep]


def _prepare(
  scores: PyTree, filter_fn: masks.FilterFn, within: PyTree | None, warn_depth: int | None = 1
) -> _Prepared:
  """``scores`` flattened and checked; a :class:`ZeroScoresWarning` points ``warn_depth`` frames
  above the caller (``None``: no warning)."""
  # The candidates: what filter_fn admits among the leaves the scoring scored (integer leaves
  # are the others: masks.not_a_candidate).
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(scores)
  leaves = [leaf for _, leaf in with_paths]
  flags = [masks.is_prunable(path, leaf, filter_fn) for path, leaf in with_paths]
  # On the CPU the selection runs in NumPy, on zero-copy views of the scores.
  on_host = topk.on_host(leaves)
  xp = np if on_host else jnp
  chosen = [topk.flatten_scores(leaf, xp) for leaf, keep in zip(leaves, flags, strict=True) if keep]
  if not chosen:
    raise ValueError(
      "No prunable leaves: filter_fn rejected every floating-point leaf of the scores tree "
      "(integer leaves are never candidates: they mark what the scoring left out; cast scores "
      "of your own to float32)."
    )
  total = sum(int(leaf.size) for leaf in chosen)
  if total > MAX_CANDIDATES:
    raise ValueError(
      f"{total:,} candidate connections: one selection counts them in int32, at most "
      f"{MAX_CANDIDATES:,}; select over part of the layers at a time (a filter_fn per group of "
      "layers, each with its own sparsity)."
    )
  flat = chosen[0] if len(chosen) == 1 else xp.concatenate(chosen)
  _check_scores(flat, xp, None if warn_depth is None else warn_depth + 3)
  within_flat, candidates = None, [int(leaf.size) for leaf in chosen]
  if within is not None:
    within_flat, candidates = _candidates(within, flags, xp)
  names = [masks.path_name(path) for path, _ in with_paths]
  return _Prepared(leaves, treedef, names, flags, chosen, flat, within_flat, candidates, on_host)


def _check_candidates(prepared: _Prepared, kappa: int, sparsity: float) -> None:
  allowed, total = sum(prepared.candidates), prepared.flat.size
  if kappa > allowed:
    raise ValueError(
      f"sparsity={sparsity} keeps κ={kappa} connections but `within` allows only {allowed} of "
      f"the {total} prunable ones; raise the sparsity to at least {1.0 - allowed / total:.6g} "
      "or widen `within`."
    )


def _select(prepared: _Prepared, reserve, budgets, *, per_leaf: bool) -> PyTree:
  """The mask of :mod:`snip_jax.topk`'s selection with these budgets, in the scores' tree."""
  if per_leaf:
    for name, budget, allowed in zip(
      prepared.prunable_names, budgets, prepared.candidates, strict=True
    ):
      if budget > allowed:
        raise ValueError(
          f"{name} must keep {int(budget)} connections but only {allowed} of its coordinates "
          "may be kept (`within`); lower its density or widen `within`."
        )
  if prepared.on_host:
    flat_mask = topk.select_host(
      prepared.flat,
      prepared.within_flat,
      reserve,
      budgets,
      sizes=prepared.sizes,
      per_leaf=per_leaf,
    )
  else:
    flat_mask = topk.select_device(
      prepared.flat,
      prepared.within_flat,
      None if reserve is None else jnp.asarray(reserve),
      jnp.asarray(budgets, jnp.int32),
      sizes=prepared.sizes,
      per_leaf=per_leaf,
    )
  return _unflatten_mask(flat_mask, prepared)


def _n_m_mask(prepared: _Prepared, pattern: tuple[int, int], min_kept: int) -> PyTree:
  """Each group of ``M`` consecutive inputs of a unit keeps its ``N`` best (module docstring)."""
  n, m = pattern
  pieces = []
  for name, leaf, shape in zip(
    prepared.prunable_names, prepared.chosen, prepared.shapes, strict=True
  ):
    if len(shape) not in (1, 2, 4):
      raise ValueError(
        f"distribution '{n}:{m}' groups the inputs of a dense (in, out) or conv (h, w, c_in, "
        f"c_out) kernel, but {name} has rank {len(shape)} (shape {shape}), whose input axes it "
        "cannot tell (an attention DenseGeneral's (in, heads, head_dim), a 1-D conv's (w, c_in, "
        "c_out)); leave it out of the prunable leaves (filter_fn)."
      )
    units = shape[-1] if len(shape) >= 2 else 1
    fan_in = leaf.size // max(units, 1)
    if leaf.size == 0 or fan_in % m:
      raise ValueError(
        f"distribution '{n}:{m}' groups every {m} consecutive inputs of a unit, but {name} "
        f"(shape {shape}) has {fan_in} inputs per unit, not a multiple of {m}; leave it out of "
        "the prunable leaves (filter_fn) or choose an M that divides its inputs."
      )
    if len(shape) == 4 and shape[2] % m:
      raise ValueError(
        f"distribution '{n}:{m}' groups every {m} consecutive input channels of a conv kernel "
        f"at one position, but {name} (shape {shape}) has {shape[2]} input channels, not a "
        f"multiple of {m}; leave it out of the prunable leaves (filter_fn)."
      )
    if min(min_kept, leaf.size) > leaf.size // m * n:
      raise ValueError(
        f"min_kept_per_layer={min_kept} asks {name} to keep more than its {leaf.size // m * n} "
        f"connections under '{n}:{m}'; lower min_kept_per_layer."
      )
    # (groups, M, units): a group is M consecutive rows of the (fan_in, units) kernel.
    keys = topk.sortable_keys(jnp.asarray(leaf)).reshape(fan_in // m, m, units)
    above = keys[:, :, None, :] > keys[:, None, :, :]  # [g, i, j, u]: key i above key j
    earlier = jnp.triu(jnp.ones((m, m), bool), 1)[None, :, :, None]  # [., i, j, .]: i < j
    tied_before = (keys[:, :, None, :] == keys[:, None, :, :]) & earlier  # i ranks first
    rank = jnp.sum(above | tied_before, axis=1)  # [g, j, u]
    pieces.append((rank < n).reshape(-1))
  flat_mask = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)
  if prepared.on_host:
    flat_mask = np.asarray(flat_mask)
  return _unflatten_mask(flat_mask, prepared)


def _with_layer_sparsity(
  scores: PyTree,
  sparsity: float,
  filter_fn: masks.FilterFn,
  distribution: str,
  min_kept: int,
  within: PyTree | None,
  layer_sparsity: Mapping[str, float] | str,
) -> PyTree:
  """:func:`top_k_mask` with ``layer_sparsity``: the named leaves keep their own top-k, the
  others are selected as if they were all there is."""
  layer_sparsity = validate_layer_sparsity(layer_sparsity)
  validate_sparsity(sparsity)
  prepared = _prepare(scores, filter_fn, within, warn_depth=2)
  by_leaf = {}
  for key, value in layer_sparsity.items():
    matches = [n for n in prepared.prunable_names if n == key or n.startswith(key + "/")]
    if not matches:
      raise ValueError(
        f"layer_sparsity names {key!r}, which matches no prunable leaf; the prunable leaves "
        f"are {prepared.prunable_names}."
      )
    for name in matches:
      if name in by_leaf:
        raise ValueError(f"layer_sparsity names {name} twice (once through {key!r}).")
      by_leaf[name] = value

  def named(path, leaf):
    return filter_fn(path, leaf) and masks.path_name(path) in by_leaf

  def others(path, leaf):
    return filter_fn(path, leaf) and masks.path_name(path) not in by_leaf

  named_prepared = _prepare(scores, named, within, warn_depth=None)
  budgets = []
  for name, leaf, allowed in zip(
    named_prepared.prunable_names,
    named_prepared.chosen,
    named_prepared.candidates,
    strict=True,
  ):
    budget = num_kept(int(leaf.size), by_leaf[name])
    floor = min(min_kept, allowed)
    if budget < floor:
      raise ValueError(
        f"layer_sparsity gives {name} {budget} connections, fewer than min_kept_per_layer="
        f"{min_kept}; lower its sparsity or min_kept_per_layer."
      )
    budgets.append(budget)
  mask = _select(named_prepared, None, np.asarray(budgets, np.int64), per_leaf=True)
  if len(by_leaf) < len(prepared.prunable_names):
    with warnings.catch_warnings():
      if not bool(prepared.flat.any()):  # Warned above, at the caller.
        warnings.simplefilter("ignore", ZeroScoresWarning)
      rest = top_k_mask(
        scores,
        sparsity,
        filter_fn=others,
        distribution=distribution,
        min_kept_per_layer=min_kept,
        within=within,
      )
    mask = jax.tree.map_with_path(
      lambda path, a, b: a if masks.path_name(path) in by_leaf else b, mask, rest
    )
  return mask


def _check_scores(flat: Any, xp: Any, stacklevel: int | None) -> None:
  """Refuses non-finite scores and warns when every score is zero (see :func:`top_k_mask`)."""
  finite = xp.isfinite(flat)
  if not bool(finite.all()):
    bad = flat.size - int(finite.sum())
    raise ValueError(
      f"{bad} of {flat.size} scores are NaN or infinite; refusing to build a mask from them. "
      "Check the initialisation and the scoring batch (an exploding init or a loss of NaN "
      "causes this)."
    )
  if stacklevel is not None and not bool(flat.any()):
    warnings.warn(
      f"All {flat.size} prunable scores are zero: no gradient reaches the prunable weights (a "
      "dead network, e.g. every ReLU inactive, a saturated loss or zero-initialised weights). "
      "The mask keeps κ connections by position (ties go to the lower index), which says "
      "nothing about their importance; check the initialisation and the scoring batch.",
      ZeroScoresWarning,
      stacklevel=stacklevel,
    )


def _candidates(within: PyTree, flags: Sequence[bool], xp: Any) -> tuple[Any, list[int]]:
  """``within``'s prunable leaves, flat and concatenated, and each leaf's number of candidates."""
  within_leaves = [
    xp.ravel(xp.asarray(w)).astype(bool)
    for w, keep in zip(jax.tree.leaves(within), flags, strict=True)
    if keep
  ]
  return xp.concatenate(within_leaves), [int(w.sum()) for w in within_leaves]


def _unflatten_mask(flat_mask: Any, prepared: _Prepared) -> PyTree:
  """The flat prunable mask back in the scores' tree, all-``True`` on the other leaves."""
  xp = np if isinstance(flat_mask, np.ndarray) else jnp
  pieces = iter(xp.split(flat_mask, np.cumsum(prepared.sizes)[:-1]))
  mask_leaves = [
    jnp.asarray(next(pieces).reshape(np.shape(leaf))) if keep else jnp.ones(np.shape(leaf), bool)
    for leaf, keep in zip(prepared.leaves, prepared.flags, strict=True)
  ]
  return jax.tree.unflatten(prepared.treedef, mask_leaves)
