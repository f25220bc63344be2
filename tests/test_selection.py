"""Top-κ selection: exact κ for every distribution, ties, the guard, `within`, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import flat_kernels, random_params

from snip_jax import count_prunable, num_kept, selection, sparsity, top_k_mask, topk
from snip_jax.selection import DISTRIBUTIONS, layer_budgets


def kept(mask) -> int:
  return sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask) if m.ndim >= 2)


def test_literal_global_selection():
  scores = {
    "a": {"kernel": jnp.array([[0.1, 0.5], [0.3, 0.2]]), "bias": jnp.array([9.0, 9.0])},
    "b": {"kernel": jnp.array([[0.4, 0.0]])},
  }
  mask = top_k_mask(scores, 0.5)  # 6 prunable scores -> keep 3: 0.5, 0.4, 0.3.
  np.testing.assert_array_equal(mask["a"]["kernel"], [[False, True], [True, False]])
  np.testing.assert_array_equal(mask["b"]["kernel"], [[True, False]])
  np.testing.assert_array_equal(mask["a"]["bias"], [True, True])  # Not prunable: kept.
  assert mask["a"]["kernel"].dtype == jnp.bool_


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.9, 0.95, 0.98, 0.99, 0.995])
@pytest.mark.parametrize("num_values", [None, 3, 1])  # Continuous, heavy ties, all equal.
def test_exact_kappa(target, num_values):
  params = random_params(jax.random.key(1), sizes=((40, 30), (30, 20), (20, 10)))
  key = jax.random.key(2)
  if num_values is None:
    scores = jax.tree.map(lambda p: jnp.abs(jax.random.normal(key, p.shape)), params)
  else:
    scores = jax.tree.map(
      lambda p: jax.random.randint(key, p.shape, 1, num_values + 1).astype(jnp.float32), params
    )
  n = count_prunable(scores)
  mask = top_k_mask(scores, target)
  assert kept(mask) == num_kept(n, target) == round((1 - target) * n)
  assert abs(sparsity(mask) - target) * n <= 0.5 + 1e-9
  again = top_k_mask(scores, target)
  jax.tree.map(np.testing.assert_array_equal, mask, again)


def test_kept_scores_dominate_pruned_scores():
  params = random_params(jax.random.key(3), sizes=((30, 20), (20, 10)))
  scores = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(4), p.shape), params)
  mask = top_k_mask(scores, 0.8)
  kept_scores = np.concatenate(
    [
      np.asarray(s)[np.asarray(m)]
      for s, m in zip(jax.tree.leaves(scores), jax.tree.leaves(mask), strict=True)
      if s.ndim > 1
    ]
  )
  pruned = np.concatenate(
    [
      np.asarray(s)[~np.asarray(m)]
      for s, m in zip(jax.tree.leaves(scores), jax.tree.leaves(mask), strict=True)
      if s.ndim > 1
    ]
  )
  assert kept_scores.min() >= pruned.max()


def test_ties_broken_by_flat_tree_order():
  scores = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
  mask = top_k_mask(scores, 0.5)  # 8 equal scores, keep 4: all of 'a', none of 'b'.
  np.testing.assert_array_equal(mask["a"]["kernel"], np.ones((2, 2), bool))
  np.testing.assert_array_equal(mask["b"]["kernel"], np.zeros((2, 2), bool))
  mask = top_k_mask(scores, 0.75)  # Keep 2: the first row of 'a'.
  np.testing.assert_array_equal(mask["a"]["kernel"], [[True, True], [False, False]])


def test_sparsity_zero_keeps_everything():
  scores = jax.tree.map(jnp.ones_like, random_params(jax.random.key(5)))
  mask = top_k_mask(scores, 0.0)
  assert all(bool(jnp.all(m)) for m in jax.tree.leaves(mask))


@pytest.mark.parametrize(
  "bad",
  [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True, np.array(True), jnp.ones(2) / 2],
)
def test_bad_sparsity_is_a_clear_error(bad):
  scores = {"kernel": jnp.ones((3, 3))}
  with pytest.raises(ValueError, match="sparsity"):
    top_k_mask(scores, bad)


@pytest.mark.parametrize("good", [0.5, np.float32(0.5), np.array(0.5), jnp.asarray(0.5), 1 / 2])
def test_sparsity_may_be_any_real_number_or_0d_array(good):
  mask = top_k_mask({"kernel": jnp.arange(1.0, 11.0)[None]}, good)
  assert jnp.sum(mask["kernel"]) == 5


def test_sparsity_that_keeps_nothing_is_an_error():
  with pytest.raises(ValueError, match="at least one weight"):
    top_k_mask({"kernel": jnp.ones((3, 3))}, 0.99)


@pytest.mark.parametrize("bad_value", [jnp.nan, jnp.inf])
def test_non_finite_scores_are_refused(bad_value):
  scores = {"kernel": jnp.ones((3, 3)).at[1, 1].set(bad_value)}
  with pytest.raises(ValueError, match="NaN or infinite"):
    top_k_mask(scores, 0.5)


def test_under_jit_is_a_clear_error():
  with pytest.raises(ValueError, match=r"cannot run under jax\.jit"):
    jax.jit(lambda s: top_k_mask(s, 0.5))({"kernel": jnp.ones((3, 4))})


def test_no_prunable_leaves_is_an_error():
  with pytest.raises(ValueError, match="No prunable leaves"):
    top_k_mask({"bias": jnp.ones(3)}, 0.5)
  # Integer scores (ranks, counts) are not candidates: the error says to cast them.
  with pytest.raises(ValueError, match="cast scores of your own to float32"):
    top_k_mask({"kernel": jnp.arange(12).reshape(3, 4)}, 0.5)


def test_more_candidates_than_int32_counts_are_refused(monkeypatch):
  """The selection counts candidates in int32: past that (2**31 - 1, here lowered to 20, as no
  test machine holds 2**31 scores) it refuses rather than wrapping around."""
  from snip_jax import selection

  monkeypatch.setattr(selection, "MAX_CANDIDATES", 20)
  scores = {"a": {"kernel": jnp.ones((4, 5))}, "b": {"kernel": jnp.ones((1, 1))}}
  with pytest.raises(ValueError, match="21 candidate connections: one selection counts them"):
    top_k_mask(scores, 0.5)
  assert int(jnp.sum(top_k_mask(scores["a"], 0.5)["kernel"])) == 10  # 20 is within the limit.


# --- Per-layer distributions, the minimum-kept guard and `within`. ---

MLP_SIZES = ((40, 30), (30, 20), (20, 10))


def kept_per_leaf(mask) -> list[int]:
  return [int(jnp.sum(m)) for m in jax.tree.leaves(mask) if m.ndim >= 2]


def prunable_pairs(scores, mask):
  """(scores, kept) numpy pairs of the prunable leaves, in tree order."""
  return [
    (np.asarray(s), np.asarray(m))
    for s, m in zip(jax.tree.leaves(scores), jax.tree.leaves(mask), strict=True)
    if s.ndim >= 2
  ]


def mlp_scores(kind: str, seed: int = 7):
  params = random_params(jax.random.key(seed), sizes=MLP_SIZES)
  key = jax.random.key(seed + 1)
  if kind == "normal":  # Signed, like GraSP scores.
    return jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
  return jax.tree.map(  # Integer-valued: heavy ties.
    lambda p: jax.random.randint(key, p.shape, -2, 3).astype(jnp.float32), params
  )


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.9, 0.98, 0.999])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_exact_kappa_every_distribution(target, distribution, kind):
  scores = mlp_scores(kind)
  n = count_prunable(scores)
  mask = top_k_mask(scores, target, distribution=distribution)
  assert kept(mask) == num_kept(n, target)
  assert all(bool(jnp.all(m)) for m in jax.tree.leaves(mask) if m.ndim == 1)  # Biases.
  if distribution != "global":
    shapes = [s.shape for s in jax.tree.leaves(scores) if s.ndim >= 2]
    assert kept_per_leaf(mask) == layer_budgets(shapes, target, distribution)
    for s, m in prunable_pairs(scores, mask):  # Each leaf keeps its own best.
      if m.any() and not m.all():
        assert s[m].min() >= s[~m].max()


def test_uniform_literal_budgets():
  scores = {
    "a": {"kernel": jnp.arange(10.0).reshape(2, 5)},
    "b": {"kernel": -jnp.arange(6.0).reshape(3, 2)},  # Negative: the largest is 0.
    "c": {"kernel": jnp.array([[0.5, 0.1], [0.4, 0.2]])},
  }
  # 20 prunable, keep 6 at density 0.3: targets 3, 1.8, 1.2 -> floors 3, 1, 1, the spare one
  # goes to the largest remainder (0.8, leaf 'b').
  mask = top_k_mask(scores, 0.7, distribution="uniform")
  assert kept_per_leaf(mask) == [3, 2, 1]
  np.testing.assert_array_equal(mask["a"]["kernel"], [[0, 0, 0, 0, 0], [0, 0, 1, 1, 1]])
  np.testing.assert_array_equal(mask["b"]["kernel"], [[1, 1], [0, 0], [0, 0]])
  np.testing.assert_array_equal(mask["c"]["kernel"], [[1, 0], [0, 0]])


def test_uniform_equal_remainders_go_in_tree_order():
  shapes = [(2, 2)] * 3
  # 12 prunable, keep round(0.4 * 12) = 5: each target 5/3; the two spare ones go to the first.
  assert layer_budgets(shapes, 0.6, "uniform") == [2, 2, 1]
  assert layer_budgets(shapes, 0.5, "uniform") == [2, 2, 2]
  assert layer_budgets(shapes, 0.0, "uniform") == [4, 4, 4]


def test_erk_literal_budgets_with_a_dense_capped_layer():
  shapes = [(100, 100), (100, 10)]  # ERK weights ε·sum(shape): 200 and 110.
  # Keep 1100: 1100·200/310 = 709.68, 1100·110/310 = 390.32 -> 710 and 390.
  assert layer_budgets(shapes, 0.9, "erk") == [710, 390]
  # Keep 5500: uncapped the small layer would get 1951.6 > 1000, so it is dense and the
  # large layer takes the other 4500.
  assert layer_budgets(shapes, 0.5, "erk") == [4500, 1000]


def test_erk_conv_budgets():
  shapes = [(3, 3, 3, 16), (3, 3, 16, 32), (512, 10)]  # Sizes 432, 4608, 5120; sums 25, 54, 522.
  # Keep 1016 of 10160: 25400/601 = 42.26, 54864/601 = 91.29, 530352/601 = 882.45.
  assert layer_budgets(shapes, 0.9, "erk") == [42, 91, 883]
  # Keep 8128: the dense layer caps at 5120, then the first conv caps at 432, the rest 2576.
  assert layer_budgets(shapes, 0.2, "erk") == [432, 2576, 5120]
  for target in (0.0, 0.3, 0.5, 0.9, 0.99, 0.999):
    budgets = layer_budgets(shapes, target, "erk")
    assert sum(budgets) == num_kept(10160, target)
    assert all(0 <= b <= np.prod(s) for b, s in zip(budgets, shapes, strict=True))
  # Densities follow sum(shape) / prod(shape): the middle conv, lowest at 54/4608, is sparsest.
  first, middle, last = layer_budgets(shapes, 0.9, "erk")
  assert middle / 4608 < first / 432 < last / 5120


def test_erk_mask_matches_budgets_on_a_conv_tree():
  key = jax.random.key(11)
  scores = {
    "conv": {"kernel": jax.random.normal(key, (3, 3, 3, 16)), "bias": jnp.zeros(16)},
    "dense": {"kernel": jax.random.uniform(key, (512, 10))},
  }
  mask = top_k_mask(scores, 0.9, distribution="erk")
  assert kept_per_leaf(mask) == layer_budgets([(3, 3, 3, 16), (512, 10)], 0.9, "erk")


def collapsing_scores():
  """An MLP whose last layer scores so low that a global top-κ at 0.98 keeps none of it."""
  scores = mlp_scores("normal")
  scores["Dense_2"]["kernel"] = jnp.abs(scores["Dense_2"]["kernel"]) * 1e-3 - 10.0
  return scores


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_min_kept_guard_prevents_collapse(distribution):
  scores = collapsing_scores()
  n = count_prunable(scores)
  if distribution == "global":
    assert kept_per_leaf(top_k_mask(scores, 0.98))[2] == 0  # Collapses without the guard.
  mask = top_k_mask(scores, 0.98, distribution=distribution, min_kept_per_layer=8)
  assert kept(mask) == num_kept(n, 0.98) == 40
  assert min(kept_per_leaf(mask)) >= 8
  for s, m in prunable_pairs(scores, mask):
    assert s[m].min() >= s[~m].max()  # The reserved ones are that layer's best.


def test_min_kept_guard_global_literal():
  scores = {
    "a": {"kernel": jnp.array([[4.0, 3.0], [2.0, 1.0]])},
    "b": {"kernel": jnp.zeros((2, 2))},
  }
  # Keep 3: plain global takes 4, 3, 2; with one reserved per leaf it takes 4, 3 and b's first.
  mask = top_k_mask(scores, 0.625, min_kept_per_layer=1)
  np.testing.assert_array_equal(mask["a"]["kernel"], [[1, 1], [0, 0]])
  np.testing.assert_array_equal(mask["b"]["kernel"], [[1, 0], [0, 0]])


def test_min_kept_larger_than_a_layer_keeps_it_whole():
  shapes = [(2, 2), (10, 10)]
  assert layer_budgets(shapes, 0.9, "erk", min_kept_per_layer=6) == [4, 6]
  assert layer_budgets(shapes, 0.9, "uniform", min_kept_per_layer=0) == [0, 10]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_min_kept_beyond_kappa_is_an_error(distribution):
  scores = mlp_scores("normal")  # 2000 prunable: keep 40 at 0.98, but 3 layers x 20 = 60.
  with pytest.raises(ValueError, match=r"60 .* κ=40.*lower min_kept_per_layer or the sparsity"):
    top_k_mask(scores, 0.98, distribution=distribution, min_kept_per_layer=20)
  with pytest.raises(ValueError, match="lower min_kept_per_layer"):
    layer_budgets([(40, 30), (30, 20), (20, 10)], 0.98, "uniform", min_kept_per_layer=20)


def random_within(scores, seed: int = 5):
  key = jax.random.key(seed)
  return jax.tree.map(lambda s: jax.random.bernoulli(key, 0.5, s.shape), scores)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("min_kept", [0, 5])
def test_within_only_keeps_candidates(distribution, min_kept):
  scores = mlp_scores("ties")
  within = random_within(scores)
  n = count_prunable(scores)
  for target in (0.6, 0.9, 0.99):
    mask = top_k_mask(
      scores, target, distribution=distribution, min_kept_per_layer=min_kept, within=within
    )
    assert kept(mask) == num_kept(n, target)
    for (s, m), w in zip(prunable_pairs(scores, mask), jax.tree.leaves(within)[1::2], strict=True):
      w = np.asarray(w)
      assert not (m & ~w).any()
      assert m.sum() >= min(min_kept, w.sum())
      if distribution != "global" and m.any() and (w & ~m).any():
        assert s[m].min() >= s[w & ~m].max()


def test_within_caps_per_layer_budgets_at_the_candidates():
  scores = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
  within = {
    "a": {"kernel": jnp.array([[True, False], [False, False]])},
    "b": {"kernel": jnp.ones((2, 2), bool)},
  }
  # Keep 4 at density 1/2: 'a' has one candidate, so 'b' takes the other three.
  mask = top_k_mask(scores, 0.5, distribution="uniform", within=within)
  np.testing.assert_array_equal(mask["a"]["kernel"], [[True, False], [False, False]])
  assert kept_per_leaf(mask) == [1, 3]


def test_within_with_fewer_candidates_than_kappa_is_an_error():
  scores = {"kernel": jnp.ones((4, 4))}
  within = {"kernel": jnp.eye(4, dtype=bool)}
  with pytest.raises(ValueError, match="`within` allows only 4 of the 16"):
    top_k_mask(scores, 0.5, within=within)
  mask = top_k_mask(scores, 0.75, within=within)  # Keep exactly the 4 candidates.
  np.testing.assert_array_equal(mask["kernel"], np.eye(4, dtype=bool))


def test_within_must_match_the_scores_tree():
  scores = {"kernel": jnp.ones((4, 4))}
  with pytest.raises(ValueError, match="shape"):
    top_k_mask(scores, 0.5, within={"kernel": jnp.ones((4, 3), bool)})
  with pytest.raises(ValueError, match="does not match"):
    top_k_mask(scores, 0.5, within={"w": jnp.ones((4, 4), bool)})


def test_non_finite_check_ignores_within():
  scores = {"kernel": jnp.ones((3, 3)).at[0, 0].set(jnp.nan)}
  within = {"kernel": jnp.ones((3, 3), bool).at[0, 0].set(False)}
  with pytest.raises(ValueError, match="NaN or infinite"):
    top_k_mask(scores, 0.5, within=within)


def reference_global_mask(scores, target):
  """Global top-κ by np.lexsort: largest score first, then lower flat index."""
  flat = flat_kernels(scores)
  order = np.lexsort((np.arange(flat.size), -flat))
  keep = np.zeros(flat.size, bool)
  keep[order[: num_kept(flat.size, target)]] = True
  return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_default_matches_lexsort_reference(seed):
  scores = mlp_scores("ties", seed=seed)
  for target in (0.0, 0.5, 0.9, 0.98):
    mask = top_k_mask(scores, target)
    flat_mask = flat_kernels(mask)
    np.testing.assert_array_equal(flat_mask, reference_global_mask(scores, target))
    same = top_k_mask(scores, target, distribution="global", min_kept_per_layer=0, within=None)
    jax.tree.map(np.testing.assert_array_equal, mask, same)


def test_low_precision_scores_are_selected_in_float32():
  scores = mlp_scores("normal")
  mask = top_k_mask(jax.tree.map(lambda s: s.astype(jnp.bfloat16), scores), 0.9)
  reference = top_k_mask(
    jax.tree.map(lambda s: s.astype(jnp.bfloat16).astype(jnp.float32), scores), 0.9
  )
  jax.tree.map(np.testing.assert_array_equal, mask, reference)


@pytest.mark.parametrize("bad", ["random", "ERK", None, 1])
def test_unknown_distribution_is_an_error(bad):
  with pytest.raises(
    ValueError, match=r"distribution must be one of \('global', 'uniform', 'erk'\)"
  ):
    top_k_mask({"kernel": jnp.ones((3, 3))}, 0.5, distribution=bad)


def test_layer_budgets_refuses_global():
  with pytest.raises(ValueError, match="use top_k_mask"):
    layer_budgets([(3, 3)], 0.5, "global")


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_bad_min_kept_is_an_error(bad):
  with pytest.raises(ValueError, match="min_kept_per_layer must be a non-negative int"):
    top_k_mask({"kernel": jnp.ones((3, 3))}, 0.5, min_kept_per_layer=bad)
  with pytest.raises(ValueError, match="min_kept_per_layer must be a non-negative int"):
    layer_budgets([(3, 3)], 0.5, "erk", min_kept_per_layer=bad)


# ------------------------------------------------------------------------------------------
# The two implementations: NumPy on the host (scores on the CPU) and the XLA radix select
# (scores on an accelerator; forced here by pretending the CPU scores are elsewhere).


def tied_scores(key, shapes=((30, 20), (20, 10), (10,), (10, 4))):
  """Scores with many exact ties (values on a coarse grid, both zeros) and negatives."""
  keys = jax.random.split(key, len(shapes))
  leaves = [jnp.round(jax.random.normal(k, s) * 3) / 4 for k, s in zip(keys, shapes, strict=True)]
  leaves[0] = leaves[0].at[0, :5].set(-0.0)
  return {
    f"layer{i}": {"kernel" if len(s) > 1 else "bias": x}
    for i, (s, x) in enumerate(zip(shapes, leaves, strict=True))
  }


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("min_kept", [0, 7])
@pytest.mark.parametrize("use_within", [False, True])
def test_numpy_and_xla_selections_agree(distribution, min_kept, use_within, monkeypatch):
  scores = tied_scores(jax.random.key(0))
  within = None
  if use_within:
    within = jax.tree.map(lambda s: jax.random.bernoulli(jax.random.key(3), 0.6, s.shape), scores)
  kwargs = dict(distribution=distribution, min_kept_per_layer=min_kept, within=within)
  for target in (0.5, 0.9, 0.97) if use_within else (0.0, 0.5, 0.9, 0.97):
    on_host = top_k_mask(scores, target, **kwargs)
    with monkeypatch.context() as m:
      m.setattr(topk, "on_host", lambda leaves: False)
      in_xla = top_k_mask(scores, target, **kwargs)
    chex.assert_trees_all_equal(on_host, in_xla)
    assert kept(on_host) == num_kept(count_prunable(scores), target)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_both_selections_keep_lax_top_k_set(sparsity, monkeypatch):
  scores = tied_scores(jax.random.key(1))
  flat = flat_kernels(scores)
  k = num_kept(flat.size, sparsity)
  expected = jnp.zeros(flat.size, bool).at[jax.lax.top_k(flat, k)[1]].set(True)

  np.testing.assert_array_equal(flat_kernels(top_k_mask(scores, sparsity)), expected)
  monkeypatch.setattr(topk, "on_host", lambda leaves: False)
  np.testing.assert_array_equal(flat_kernels(top_k_mask(scores, sparsity)), expected)


def test_scores_given_as_numpy_arrays_select_on_the_host():
  scores = jax.tree.map(np.asarray, tied_scores(jax.random.key(2)))
  assert topk.on_host(jax.tree.leaves(scores))
  mask = top_k_mask(scores, 0.9)
  assert all(isinstance(m, jax.Array) and m.dtype == bool for m in jax.tree.leaves(mask))


def test_kernels_keep_lax_top_k_set_with_signed_zeros_and_ties():
  # 0.5 twice (index 1 wins the tie), then +0.0 (index 4) above -0.0 (indices 0 and 3).
  values = np.array([-0.0, 0.5, -1.0, -0.0, 0.0, 0.5, 0.25], np.float32)
  for k, kept_indices in ((2, [1, 5]), (4, [1, 4, 5, 6]), (5, [0, 1, 4, 5, 6])):
    expected = np.zeros(values.size, bool)
    expected[kept_indices] = True
    np.testing.assert_array_equal(topk.introselect_top_k(values, k), expected)
    keys = topk.sortable_keys(jnp.asarray(values))
    budgets = jnp.array([k], jnp.int32)
    np.testing.assert_array_equal(
      topk.radix_top_k(keys, None, np.zeros(1, np.int64), budgets), expected
    )
    lax_set = np.zeros(values.size, bool)
    lax_set[np.asarray(jax.lax.top_k(jnp.asarray(values), k)[1])] = True
    np.testing.assert_array_equal(lax_set, expected)


def test_zero_scores_warning_points_at_the_caller():
  with pytest.warns(selection.ZeroScoresWarning, match="All 4 prunable scores are zero") as record:
    top_k_mask({"kernel": jnp.zeros((2, 2))}, 0.5)
  assert [w.filename for w in record] == [__file__]


# ------------------------------------------------------------------------------------------
# N:M: exactly N of every M consecutive inputs of a unit.


def n_m_reference(kernel: np.ndarray, n: int, m: int) -> np.ndarray:
  """Each group's N best by lax.top_k (ties to the lower index), group by group."""
  units = kernel.shape[-1]
  rows = kernel.reshape(-1, units)
  keep = np.zeros(rows.shape, bool)
  for u in range(units):
    for start in range(0, rows.shape[0], m):
      group = jnp.asarray(rows[start : start + m, u])
      keep[start + np.asarray(jax.lax.top_k(group, n)[1]), u] = True
  return keep.reshape(kernel.shape)


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "3:8", "1:2"])
def test_n_m_keeps_exactly_n_in_every_group(pattern, monkeypatch):
  n, m = map(int, pattern.split(":"))
  shapes = ((16, 6), (3, 3, 8, 5), (8, 3))  # Dense, conv (fan-in 72 = 3·3·8), dense.
  keys = jax.random.split(jax.random.key(0), len(shapes))
  scores = {
    f"layer{i}": {"kernel": jnp.round(jax.random.normal(k, s) * 2) / 2, "bias": jnp.ones(s[-1])}
    for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
  }
  scores["layer1"]["kernel"] = scores["layer1"]["kernel"].at[0, 0, :4, 0].set(-0.0)
  for on_host in (True, False):
    with monkeypatch.context() as patch:
      if not on_host:
        patch.setattr(topk, "on_host", lambda leaves: False)
      mask = top_k_mask(scores, 1 - n / m, distribution=pattern)
    for name, shape in zip(scores, shapes, strict=True):
      kernel = np.asarray(mask[name]["kernel"])
      groups = kernel.reshape(-1, m, shape[-1])  # M consecutive inputs of each unit.
      np.testing.assert_array_equal(groups.sum(axis=1), n)
      reference = n_m_reference(np.asarray(scores[name]["kernel"]), n, m)
      np.testing.assert_array_equal(kernel, reference)
      assert bool(mask[name]["bias"].all())  # Not prunable.
    assert kept(mask) == num_kept(count_prunable(scores), 1 - n / m)


def test_n_m_literal_groups_and_ties():
  # One unit, 8 inputs: groups [3, 1, 4, 1] and [5, 5, 5, 0]: 2:4 keeps 3 and 4, then the
  # first two 5s (ties to the lower index).
  scores = {"kernel": jnp.array([[3.0], [1.0], [4.0], [1.0], [5.0], [5.0], [5.0], [0.0]])}
  mask = top_k_mask(scores, 0.5, distribution="2:4")
  np.testing.assert_array_equal(mask["kernel"][:, 0], [1, 0, 1, 0, 1, 1, 0, 0])


def test_n_m_groups_run_along_the_inputs_of_a_conv_kernel():
  # (h, w, c_in, c_out) = (1, 2, 4, 1): a group is the 4 input channels at one position.
  kernel = jnp.array([[[[0.1], [0.9], [0.8], [0.2]], [[0.7], [0.6], [0.3], [0.4]]]])
  assert kernel.shape == (1, 2, 4, 1)
  mask = top_k_mask({"conv": {"kernel": kernel}}, 0.5, distribution="2:4")["conv"]["kernel"]
  np.testing.assert_array_equal(mask.reshape(2, 4), [[0, 1, 1, 0], [1, 1, 0, 0]])


def test_n_m_refuses_inputs_not_in_groups_of_m():
  scores = {"a": {"kernel": jnp.ones((8, 3))}, "b": {"kernel": jnp.ones((6, 2))}}
  with pytest.raises(ValueError, match=r"b/kernel \(shape \(6, 2\)\) has 6 inputs per unit"):
    top_k_mask(scores, 0.5, distribution="2:4")


def test_n_m_refuses_kernels_whose_input_axes_it_cannot_tell():
  # An attention query kernel (in, heads, head_dim): its inputs are `in` alone, and "all axes but
  # the last" would group across heads.
  with pytest.raises(ValueError, match=r"query/kernel has rank 3 \(shape \(8, 4, 2\)\)"):
    top_k_mask({"query": {"kernel": jnp.ones((8, 4, 2))}}, 0.5, distribution="2:4")
  # A conv kernel whose 6 input channels at a position do not split into groups of 4.
  with pytest.raises(ValueError, match=r"has 6 input channels, not a multiple of 4"):
    top_k_mask({"conv": {"kernel": jnp.ones((2, 2, 6, 3))}}, 0.5, distribution="2:4")


def test_n_m_needs_its_own_sparsity():
  with pytest.raises(ValueError, match=r"keeps 2 of every 4 weights.*set sparsity=0.5"):
    top_k_mask({"kernel": jnp.ones((8, 3))}, 0.9, distribution="2:4")


def test_n_m_refuses_within():
  scores = {"kernel": jnp.ones((8, 3))}
  with pytest.raises(ValueError, match="selects in one shot"):
    top_k_mask(scores, 0.5, distribution="2:4", within=jax.tree.map(lambda s: s > 0, scores))


@pytest.mark.parametrize("bad", ["4:4", "0:4", "5:4", "2:", ":4", "2:4:8"])
def test_bad_n_m_is_an_error(bad):
  with pytest.raises(ValueError, match="distribution"):
    top_k_mask({"kernel": jnp.ones((8, 3))}, 0.5, distribution=bad)


def test_layer_budgets_refuses_n_m():
  with pytest.raises(ValueError, match="use top_k_mask"):
    layer_budgets([(8, 4)], 0.5, "2:4")


# ------------------------------------------------------------------------------------------
# layer_sparsity: named layers at their own sparsity, the others as `distribution` says.


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("as_text", [False, True])
def test_layer_sparsity_fixes_the_named_layers(distribution, as_text):
  params = random_params(jax.random.key(5), sizes=((40, 30), (30, 20), (20, 10)))
  scores = jax.tree.map(lambda p: jnp.abs(jax.random.normal(jax.random.key(6), p.shape)), params)
  layers = {"Dense_0/kernel": 0.5, "Dense_2": 0.0}
  given = "Dense_0/kernel=0.5, Dense_2=0" if as_text else layers
  mask = top_k_mask(scores, 0.9, distribution=distribution, layer_sparsity=given)
  assert int(mask["Dense_0"]["kernel"].sum()) == 600  # Exactly half of 1200, its own best.
  assert bool(mask["Dense_2"]["kernel"].all())
  first = np.asarray(scores["Dense_0"]["kernel"]).ravel()
  expected = np.zeros(first.size, bool)
  expected[np.asarray(jax.lax.top_k(jnp.asarray(first), 600)[1])] = True
  np.testing.assert_array_equal(np.asarray(mask["Dense_0"]["kernel"]).ravel(), expected)
  # The unnamed layer is the mask of the same selection over it alone.
  alone = top_k_mask({"Dense_1": scores["Dense_1"]}, 0.9, distribution=distribution)
  np.testing.assert_array_equal(mask["Dense_1"]["kernel"], alone["Dense_1"]["kernel"])
  assert int(mask["Dense_1"]["kernel"].sum()) == 60


def test_layer_sparsity_of_every_layer_ignores_the_global_sparsity():
  scores = {"a": {"kernel": jnp.arange(12.0).reshape(4, 3)}, "b": {"kernel": jnp.ones((3, 2))}}
  mask = top_k_mask(scores, 0.9, layer_sparsity={"a": 0.75, "b": 0.5})
  np.testing.assert_array_equal(mask["a"]["kernel"].ravel(), [0] * 9 + [1] * 3)
  np.testing.assert_array_equal(mask["b"]["kernel"].ravel(), [1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize(
  ("layers", "match"),
  [
    ({"Dense_9": 0.5}, r"matches no prunable leaf; the prunable leaves are \['Dense_0/kernel'"),
    ({"Dense_0": 0.5, "Dense_0/kernel": 0.9}, "names Dense_0/kernel twice"),
    ({"Dense_0": 1.0}, r"layer_sparsity\['Dense_0'\]: sparsity must lie in \[0, 1\)"),
    ("Dense_0:0.5", "is not NAME=SPARSITY"),
    ("Dense_0=half", "is not NAME=SPARSITY"),
    ({}, "must map layer names to sparsities"),
  ],
)
def test_bad_layer_sparsity_is_a_clear_error(layers, match):
  scores = random_params(jax.random.key(7))
  with pytest.raises(ValueError, match=match):
    top_k_mask(scores, 0.9, layer_sparsity=layers)


def test_layer_sparsity_bias_is_not_prunable_by_default():
  scores = random_params(jax.random.key(8))
  with pytest.raises(ValueError, match="matches no prunable leaf"):
    top_k_mask(scores, 0.5, layer_sparsity={"Dense_0/bias": 0.5})


# ------------------------------------------------------------------------------------------
# top_k_like: another mask's per-layer counts.


def test_top_k_like_keeps_the_reference_counts_by_the_scores():
  params = random_params(jax.random.key(9), sizes=((30, 20), (20, 10)))
  reference = top_k_mask(jax.tree.map(jnp.abs, params), 0.9)
  scores = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(10), p.shape), params)
  mask = selection.top_k_like(scores, reference)
  for name in params:
    count = int(reference[name]["kernel"].sum())
    assert int(mask[name]["kernel"].sum()) == count
    flat = jnp.ravel(scores[name]["kernel"])
    expected = jnp.zeros(flat.size, bool).at[jax.lax.top_k(flat, count)[1]].set(True)
    np.testing.assert_array_equal(jnp.ravel(mask[name]["kernel"]), expected)
