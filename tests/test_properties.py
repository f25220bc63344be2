"""Property-based tests (hypothesis) of the masked optimizer and of top-κ selection.

Masked optimizer, under ``jax.jit`` (``lax.scan`` over ``STEPS`` = 8 updates): SGD, momentum,
Nesterov, Adam, AdamW, Lion and RMSProp, each with and without weight decay and with and without
global-norm clipping (28 combinations), on random params trees of 1 to 3 leaves, ``bool`` masks
(whole leaves kept or pruned included) and gradient sequences:

* every pruned weight and every params-shaped state leaf (moments, traces) is exactly 0 after
  every update;
* after every update the kept weights equal those of the same optimizer, without ``masked``,
  run on the kept coordinates alone, packed into one vector.

The same runs also pass through an inner transform that adds noise to every coordinate: only
the masking of the updates keeps those pruned weights at 0 (the 28 above see zero gradients and
zero params there, so they update nothing there even without it).

Selection (``top_k_mask``), on the NumPy path (CPU scores) and on the XLA radix select (as on an
accelerator): for finite scores with many ties, signed zeros or arbitrary float32 values, and
any sparsity keeping κ >= 1, the global mask is exactly the κ largest, ties to the lower flat
index (``+0.0`` above ``-0.0``); ``"uniform"`` and ``"erk"`` keep exactly κ, each leaf its best;
both paths agree and a second call gives the same mask. A sparsity keeping nothing raises
``ValueError``. ``"N:M"`` keeps exactly ``N`` of every group of ``M`` consecutive inputs of a
unit: each group's ``N`` largest, ties to the lower index.

Cases (``derandomize=True``: the same on every run): 28 optimizer combinations x 30 examples
(3 trees x 10) = 840, plus 30 noise runs; selection 160 examples (each 3 distributions x 2
paths) plus 40 that keep nothing, plus 40 N:M selections. 1,110 in all.
"""

import itertools
from fractions import Fraction
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snip_jax import masks, optim, selection, topk

PROPERTY_SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True)
#: Examples per test (the README's figures are computed from these).
OPTIMIZER_EXAMPLES = 10  # Per params tree; each runs every combination.
SELECTION_EXAMPLES = 160  # Each checks every distribution on both paths.
NOTHING_KEPT_EXAMPLES = 40
N_M_EXAMPLES = 40

# --- Masked optimizer. ---

STEPS = 8
LEARNING_RATE = 0.05
WEIGHT_DECAY = 0.1
MAX_NORM = 1.0

#: Leaf shapes of the params trees; few, since each new tree compiles every optimizer again.
OPTIMIZER_TREES = (
  {"w": (3,)},
  {"kernel": (2, 3), "bias": (3,)},
  {"Dense_0": {"kernel": (4, 2), "bias": (2,)}, "Dense_1": {"kernel": (2, 3)}},
)

#: Optimizer name -> (factory taking the weight decay, number of params-shaped state leaves).
OPTIMIZERS = {
  "sgd": (lambda wd: optax.sgd(LEARNING_RATE), 0),
  "momentum": (lambda wd: optax.sgd(LEARNING_RATE, momentum=0.9), 1),
  "nesterov": (lambda wd: optax.sgd(LEARNING_RATE, momentum=0.9, nesterov=True), 1),
  "adam": (lambda wd: optax.adam(LEARNING_RATE), 2),
  "adamw": (lambda wd: optax.adamw(LEARNING_RATE, weight_decay=wd), 2),
  "lion": (lambda wd: optax.lion(LEARNING_RATE, weight_decay=wd), 1),
  "rmsprop": (lambda wd: optax.rmsprop(LEARNING_RATE), 1),
}
OWN_WEIGHT_DECAY = ("adamw", "lion")


def make_optimizer(name: str, decay: bool, clip: bool) -> optax.GradientTransformation:
  """``name``, with weight decay (its own, or ``add_decayed_weights`` before it) and clipping."""
  wd = WEIGHT_DECAY if decay else 0.0
  tx = OPTIMIZERS[name][0](wd)
  if decay and name not in OWN_WEIGHT_DECAY:
    tx = optax.chain(optax.add_decayed_weights(wd), tx)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(MAX_NORM), tx)
  return tx


def scan_updates(tx: optax.GradientTransformation, params, grads_T):
  """Params and optimizer state after each of the updates, stacked along a leading axis."""

  def step(carry, grads):
    params, state = carry
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), (params, state)

  _, history = jax.lax.scan(step, (params, tx.init(params)), grads_T)
  return history


COMBINATIONS = {
  f"{name}{'-decay' * decay}{'-clip' * clip}": (name, decay, clip)
  for name, decay, clip in itertools.product(OPTIMIZERS, (False, True), (False, True))
}


def noisy_inner() -> optax.GradientTransformation:
  """Momentum SGD plus noise: non-zero updates at every coordinate, pruned ones included."""
  return optax.chain(
    optax.sgd(LEARNING_RATE, momentum=0.9), optax.add_noise(1.0, 0.0, key=jax.random.key(0))
  )


@jax.jit
def train_all(params, mask, grads_T, packed, packed_grads_T):
  """Every combination, ``masked`` on the tree and bare on the packed kept coordinates.

  One program for all of them: XLA compiles it about three times as fast as 28 small ones.

  Returns:
    ``({combination: (params_T, inner_state_T, packed_T)}, noisy params_T)``.
  """
  params = masks.apply_mask(params, mask)
  runs = {}
  for key, combination in COMBINATIONS.items():
    params_T, state_T = scan_updates(
      optim.masked(make_optimizer(*combination), mask), params, grads_T
    )
    packed_T, _ = scan_updates(make_optimizer(*combination), packed, packed_grads_T)
    runs[key] = (params_T, state_T.inner_state, packed_T)
  noisy_T, _ = scan_updates(optim.masked(noisy_inner(), mask), params, grads_T)
  return runs, noisy_T


def is_shape(node) -> bool:
  """Whether ``node`` of a tree of shapes is a leaf shape (a tuple, not a subtree)."""
  return isinstance(node, tuple)


def flat_history(tree) -> np.ndarray:
  """A stacked tree ``[T, ...]`` per leaf as one ``[T, N]`` array, leaves in tree order."""
  leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
  return np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


def flat(tree) -> np.ndarray:
  """The leaves of ``tree`` flattened and joined in tree order."""
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def params_shaped(state, params_def) -> list:
  """Every subtree of ``state`` with the params' tree structure (moments, traces)."""
  is_moment = lambda node: jax.tree.structure(node) == params_def  # noqa: E731
  return [node for node in jax.tree.leaves(state, is_leaf=is_moment) if is_moment(node)]


def leaf_mask(shape):
  """A ``bool`` mask leaf: random, or all kept, or all pruned."""
  return st.one_of(
    hnp.arrays(bool, shape),
    st.sampled_from([True, False]).map(lambda keep: np.full(shape, keep)),
  )


@st.composite
def training_cases(draw, shapes):
  """``(params, mask, grads_T)`` shaped like ``shapes``: float32 params and gradients in [-2, 2]."""
  values = st.floats(-2.0, 2.0, width=32)

  def draw_tree(strategy):
    return jax.tree.map(lambda s: draw(strategy(s)), shapes, is_leaf=is_shape)

  def floats(shape):
    return hnp.arrays(np.float32, shape, elements=values, fill=st.nothing())

  params = draw_tree(floats)
  mask = draw_tree(leaf_mask)
  grads_T = draw_tree(lambda s: floats((STEPS, *s)))
  return params, mask, grads_T


def assert_pruned_zero(history_T, mask_flat: np.ndarray, what: str) -> None:
  values_T = flat_history(history_T)
  assert values_T.shape[1] == mask_flat.size
  bad = np.argwhere(values_T[:, ~mask_flat] != 0.0)
  assert bad.size == 0, f"{what} non-zero at pruned coordinates (update, index): {bad[:5]}"


#: XLA compiles the masked and the bare runs into differently fused code, so even without
#: clipping some weights differ in their last bits. The tolerance lets each update round the
#: largest weight differently once: ``STEPS`` times ε · max(1, |largest weight|); measured over
#: 6,720 runs (240 per combination): at most 3.5.
ULPS = STEPS


@pytest.mark.parametrize("shapes", OPTIMIZER_TREES, ids=["one_leaf", "two_leaves", "three_leaves"])
@settings(max_examples=OPTIMIZER_EXAMPLES, **PROPERTY_SETTINGS)
@given(data=st.data())
def test_masked_optimizers_keep_pruned_zero_and_match_the_bare_optimizer(shapes, data):
  params, mask, grads_T = data.draw(training_cases(shapes))
  mask_flat = flat(mask)
  kept = np.flatnonzero(mask_flat)
  n, k = mask_flat.size, kept.size
  # The sub-network: kept coordinates first, in tree order, then zeros (they stay zero).
  packed = np.zeros(n, np.float32)
  packed[:k] = flat(params)[kept]
  packed_grads_T = np.zeros((STEPS, n), np.float32)
  packed_grads_T[:, :k] = flat_history(grads_T)[:, kept]

  runs, noisy_T = train_all(params, mask, grads_T, packed, packed_grads_T)
  params_def = jax.tree.structure(params)
  for key, (params_T, state_T, packed_T) in runs.items():
    assert_pruned_zero(params_T, mask_flat, f"{key}: params")
    moments = params_shaped(state_T, params_def)
    assert len(moments) == OPTIMIZERS[COMBINATIONS[key][0]][1], key
    for moment in moments:
      assert_pruned_zero(moment, mask_flat, f"{key}: optimizer state")
    packed_T = np.asarray(packed_T)
    np.testing.assert_array_equal(packed_T[:, k:], 0.0, err_msg=key)
    scale = max(1.0, float(np.abs(packed_T).max(initial=0.0)))
    np.testing.assert_allclose(
      flat_history(params_T)[:, kept],
      packed_T[:, :k],
      rtol=0,
      atol=ULPS * np.finfo(np.float32).eps * scale,
      err_msg=key,
    )

  assert_pruned_zero(noisy_T, mask_flat, "noisy: params")
  moved = flat_history(noisy_T)[-1, kept] != flat(params)[kept]
  assert moved.all(), "the noise should move every kept weight"


# --- Selection. ---

#: Score trees; the default filter prunes the ``ndim >= 2`` leaves only.
SELECTION_TREES = (
  {"kernel": (2, 3)},
  {"Dense_0": {"kernel": (4, 2), "bias": (2,)}, "Dense_1": {"kernel": (2, 3), "bias": (3,)}},
  {"conv": {"kernel": (2, 2, 1, 3), "bias": (3,)}, "dense": {"kernel": (3, 1)}, "scale": ()},
)

#: Kinds of score values: (elements, whether every element is drawn on its own).
SCORE_VALUES = {
  "ties": (st.integers(0, 3).map(float), False),
  "signed_zeros": (st.sampled_from([-1.5, -0.0, 0.0, 2.0]), False),
  "floats": (st.floats(allow_nan=False, allow_infinity=False, width=32), True),
}


def num_prunable(shapes) -> int:
  return sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=is_shape) if len(s) >= 2)


@st.composite
def score_trees(draw, shapes):
  """Float32 CPU score arrays shaped like ``shapes``, all from one kind of values."""
  values, distinct = SCORE_VALUES[draw(st.sampled_from(sorted(SCORE_VALUES)))]
  fill = st.nothing() if distinct else None
  return jax.tree.map(
    lambda s: jnp.asarray(draw(hnp.arrays(np.float32, s, elements=values, fill=fill))),
    shapes,
    is_leaf=is_shape,
  )


@st.composite
def scores_and_sparsity(draw):
  """A score tree and a sparsity in [0, 1) that keeps κ >= 1: exact fractions, halves (where
  ``round`` goes to the even κ) and arbitrary floats."""
  shapes = draw(st.sampled_from(SELECTION_TREES))
  n = num_prunable(shapes)
  sparsity = draw(
    st.one_of(
      st.integers(1, n).map(lambda k: 1.0 - k / n),
      st.integers(2, n).map(lambda k: 1.0 - (k - 0.5) / n),
      st.floats(0.0, 1.0 - 0.5 / n, exclude_max=True),
    )
  )
  assume(round((1.0 - sparsity) * n) >= 1)
  return draw(score_trees(shapes)), sparsity


def prunable(tree) -> list[np.ndarray]:
  return [np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree) if np.ndim(x) >= 2]


def expected_global(flat_scores: np.ndarray, kappa: int) -> np.ndarray:
  """The κ largest, ties to the lower flat index, ``+0.0`` above ``-0.0``: by a full sort."""
  order = np.lexsort((np.arange(flat_scores.size), np.signbit(flat_scores), -flat_scores))
  keep = np.zeros(flat_scores.size, bool)
  keep[order[:kappa]] = True
  return keep


def select_both_ways(scores, sparsity, distribution):
  """``top_k_mask`` on the NumPy path and on the XLA radix select, checking which one ran."""
  masks_by_path = []
  for on_host in (True, False):
    with (
      mock.patch.object(topk, "on_host", lambda leaves, on_host=on_host: on_host),
      mock.patch.object(topk, "select_device", wraps=topk.select_device) as xla,
      mock.patch.object(topk, "select_host", wraps=topk.select_host) as host,
    ):
      mask = selection.top_k_mask(scores, sparsity, distribution=distribution)
      again = selection.top_k_mask(scores, sparsity, distribution=distribution)
    assert (host.call_count, xla.call_count) == ((2, 0) if on_host else (0, 2))
    jax.tree.map(np.testing.assert_array_equal, mask, again)
    masks_by_path.append(mask)
  jax.tree.map(np.testing.assert_array_equal, *masks_by_path)
  return masks_by_path[0]


#: Every prunable score zero is a legal input (top_k_mask may warn about it).
ignore_zero_scores_warning = pytest.mark.filterwarnings("ignore:All .* prunable scores are zero")


@ignore_zero_scores_warning
@settings(max_examples=SELECTION_EXAMPLES, **PROPERTY_SETTINGS)
@given(case=scores_and_sparsity())
def test_top_k_mask_keeps_exactly_the_kappa_best(case):
  scores, sparsity = case
  score_leaves = prunable(scores)
  n = sum(s.size for s in score_leaves)
  kappa = round((1.0 - sparsity) * n)
  assert selection.num_kept(n, sparsity) == kappa

  for distribution in selection.DISTRIBUTIONS:
    mask = select_both_ways(scores, sparsity, distribution)
    assert jax.tree.structure(mask) == jax.tree.structure(scores)
    assert [(np.shape(m), m.dtype) for m in jax.tree.leaves(mask)] == [
      (np.shape(s), np.dtype(bool)) for s in jax.tree.leaves(scores)
    ]
    assert all(np.all(m) for m in jax.tree.leaves(mask) if np.ndim(m) < 2)
    mask_leaves = prunable(mask)
    assert sum(int(m.sum()) for m in mask_leaves) == kappa

    if distribution == "global":
      flat_scores, flat_mask = np.concatenate(score_leaves), np.concatenate(mask_leaves)
      if 0 < kappa < n:
        assert flat_scores[flat_mask].min() >= flat_scores[~flat_mask].max()
      np.testing.assert_array_equal(flat_mask, expected_global(flat_scores, kappa))
    else:
      shapes = [np.shape(x) for x in jax.tree.leaves(scores) if np.ndim(x) >= 2]
      budgets = selection.layer_budgets(shapes, sparsity, distribution)
      assert [int(m.sum()) for m in mask_leaves] == budgets
      if distribution == "uniform":  # κ · n_l / n, rounded down or up.
        for budget, s in zip(budgets, score_leaves, strict=True):
          assert abs(budget - Fraction(kappa * s.size, n)) < 1
      for s, m in zip(score_leaves, mask_leaves, strict=True):
        np.testing.assert_array_equal(m, expected_global(s, int(m.sum())))


@ignore_zero_scores_warning
@settings(max_examples=NOTHING_KEPT_EXAMPLES, **PROPERTY_SETTINGS)
@given(data=st.data())
def test_sparsity_that_keeps_nothing_is_refused(data):
  shapes = data.draw(st.sampled_from(SELECTION_TREES))
  n = num_prunable(shapes)
  sparsity = data.draw(st.floats(1.0 - 0.5 / n, 1.0, exclude_max=True))
  assume(round((1.0 - sparsity) * n) == 0)
  scores = data.draw(score_trees(shapes))
  with pytest.raises(ValueError, match="at least one weight"):
    selection.num_kept(n, sparsity)
  for distribution, on_host in itertools.product(selection.DISTRIBUTIONS, (True, False)):
    with (
      mock.patch.object(topk, "on_host", lambda leaves, on_host=on_host: on_host),
      pytest.raises(ValueError, match="at least one weight"),
    ):
      selection.top_k_mask(scores, sparsity, distribution=distribution)


@ignore_zero_scores_warning
@settings(max_examples=N_M_EXAMPLES, **PROPERTY_SETTINGS)
@given(data=st.data())
def test_n_m_keeps_exactly_the_n_best_of_every_group(data):
  m = data.draw(st.sampled_from([2, 4, 8]))
  n = data.draw(st.integers(1, m - 1))
  # A dense kernel (groups * M, units) and a conv kernel (k, k, c_in, c_out) with c_in = M.
  shapes = {
    "Dense_0": {"kernel": (m * data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))},
    "Conv_0": {"kernel": (*(data.draw(st.integers(1, 2)),) * 2, m, 2), "bias": (2,)},
  }
  scores = data.draw(score_trees(shapes))
  mask = selection.top_k_mask(scores, 1 - n / m, distribution=f"{n}:{m}")
  for layer in shapes:
    kernel, given = np.asarray(mask[layer]["kernel"]), np.asarray(scores[layer]["kernel"])
    units = kernel.shape[-1]
    groups, values = kernel.reshape(-1, m, units), given.reshape(-1, m, units)
    np.testing.assert_array_equal(groups.sum(axis=1), n)
    for g, u in itertools.product(range(groups.shape[0]), range(units)):
      np.testing.assert_array_equal(groups[g, :, u], expected_global(values[g, :, u], n))
  assert bool(np.all(mask["Conv_0"]["bias"]))
