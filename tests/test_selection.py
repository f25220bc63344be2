"""Global top-κ selection: exact κ, ties, determinism, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from snip_jax import count_prunable, num_kept, sparsity, top_k_mask


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
      lambda p: jax.random.randint(key, p.shape, 0, num_values).astype(jnp.float32), params
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
  scores = jax.tree.map(jnp.zeros_like, random_params(jax.random.key(5)))
  mask = top_k_mask(scores, 0.0)
  assert all(bool(jnp.all(m)) for m in jax.tree.leaves(mask))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_bad_sparsity_is_a_clear_error(bad):
  scores = {"kernel": jnp.ones((3, 3))}
  with pytest.raises(ValueError, match="sparsity"):
    top_k_mask(scores, bad)


def test_sparsity_that_keeps_nothing_is_an_error():
  with pytest.raises(ValueError, match="at least one weight"):
    top_k_mask({"kernel": jnp.ones((3, 3))}, 0.99)


@pytest.mark.parametrize("bad_value", [jnp.nan, jnp.inf])
def test_non_finite_scores_are_refused(bad_value):
  scores = {"kernel": jnp.ones((3, 3)).at[1, 1].set(bad_value)}
  with pytest.raises(ValueError, match="NaN or infinite"):
    top_k_mask(scores, 0.5)


def test_no_prunable_leaves_is_an_error():
  with pytest.raises(ValueError, match="No prunable leaves"):
    top_k_mask({"bias": jnp.ones(3)}, 0.5)
