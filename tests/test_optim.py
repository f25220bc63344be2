"""The masked optimizer keeps pruned weights and their optimizer state at exactly zero."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import random_params

from snip_jax import apply_mask, masked
from snip_jax.optim import zero_masked_moments

OPTIMIZERS = {
  "sgd_momentum_weight_decay": lambda: optax.chain(
    optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9)
  ),
  "adamw": lambda: optax.adamw(1e-2, weight_decay=1e-2),
}


def random_mask(params, key, keep=0.3):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
    treedef,
    [
      jax.random.bernoulli(k, keep, p.shape) if p.ndim >= 2 else jnp.ones(p.shape, bool)
      for k, p in zip(keys, leaves, strict=True)
    ],
  )


def leaves_shaped_like(state, params):
  """Every subtree of ``state`` with the structure of ``params`` (the optimizer moments)."""
  treedef = jax.tree.structure(params)
  found = []

  def visit(node):
    if jax.tree.structure(node) == treedef:
      found.append(node)
      return True
    return False

  jax.tree.map(lambda x: x, state, is_leaf=visit)
  return found


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_and_state_stay_zero_for_100_updates(name):
  params = random_params(jax.random.key(0), sizes=((16, 12), (12, 8), (8, 4)))
  mask = random_mask(params, jax.random.key(1))
  params = apply_mask(params, mask)
  tx = masked(OPTIMIZERS[name](), mask)
  state = tx.init(params)

  @jax.jit
  def step(params, state, key):
    # Gradients that are non-zero everywhere, pruned coordinates included.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    grads = jax.tree.unflatten(
      treedef, [jax.random.normal(k, p.shape) + 1.0 for k, p in zip(keys, leaves, strict=True)]
    )
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  initial = params
  for i in range(100):
    params, state = step(params, state, jax.random.key(i))

  for p, m, p0 in zip(
    jax.tree.leaves(params), jax.tree.leaves(mask), jax.tree.leaves(initial), strict=True
  ):
    p, m = np.asarray(p), np.asarray(m)
    np.testing.assert_array_equal(p[~m], 0.0)
    assert np.all(p[m] != np.asarray(p0)[m])  # Kept weights did train.
  moments = leaves_shaped_like(state.inner_state, params)
  assert moments, "the inner optimizer should hold at least one params-shaped moment"
  for moment in moments:
    for v, m in zip(jax.tree.leaves(moment), jax.tree.leaves(mask), strict=True):
      np.testing.assert_array_equal(np.asarray(v)[~np.asarray(m)], 0.0)
      assert np.any(np.asarray(v)[np.asarray(m)] != 0.0)


def test_mask_that_does_not_match_params_is_a_clear_error():
  params = random_params(jax.random.key(0))
  other = random_params(jax.random.key(0), sizes=((6, 5), (5, 3)))
  with pytest.raises(ValueError, match="does not match"):
    masked(optax.sgd(0.1), random_mask(other, jax.random.key(1))).init(params)
  wrong_shape = jax.tree.map(lambda p: jnp.ones(p.shape[::-1], bool), params)
  with pytest.raises(ValueError, match="different model"):
    masked(optax.sgd(0.1), wrong_shape).init(params)


def remasking_reference(inner, mask):
  """The slower formulation ``masked`` replaced: it also re-masks the state after every update."""

  def init_fn(params):
    return inner.init(params)

  def update_fn(updates, state, params=None):
    updates, state = inner.update(apply_mask(updates, mask), state, params)
    return apply_mask(updates, mask), zero_masked_moments(state, mask)

  return optax.GradientTransformation(init_fn, update_fn)


SPEED_CASES = {
  "nesterov_clipped": lambda: optax.chain(
    optax.clip_by_global_norm(1.0), optax.sgd(0.05, momentum=0.9, nesterov=True)
  ),
  "adam": lambda: optax.adam(1e-2),
  "rmsprop": lambda: optax.rmsprop(1e-2),
  "lion": lambda: optax.lion(1e-3, weight_decay=1e-2),
  "adagrad": lambda: optax.adagrad(1e-2),  # A non-zero initial accumulator.
  **OPTIMIZERS,
}


@pytest.mark.parametrize("name", sorted(SPEED_CASES))
def test_masking_gradients_and_updates_only_matches_remasking_the_state(name):
  # `masked` skips re-masking the state after each update (it made XLA copy every buffer);
  # the params and the state must come out as with re-masking, and the state stays zero.
  params = random_params(jax.random.key(0), sizes=((16, 12), (12, 8), (8, 4)))
  mask = random_mask(params, jax.random.key(1))
  params = apply_mask(params, mask)
  fast, slow = masked(SPEED_CASES[name](), mask), remasking_reference(SPEED_CASES[name](), mask)

  def run(tx):
    @jax.jit
    def step(params, state, key):
      leaves, treedef = jax.tree.flatten(params)
      keys = jax.random.split(key, len(leaves))
      grads = jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
      )
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    p, state = params, tx.init(params)
    for i in range(30):
      p, state = step(p, state, jax.random.key(i))
    return p, state

  (p_fast, s_fast), (p_slow, s_slow) = run(fast), run(slow)
  for a, b in zip(jax.tree.leaves(p_fast), jax.tree.leaves(p_slow), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(s_fast.inner_state), jax.tree.leaves(s_slow), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for moment in leaves_shaped_like(s_fast.inner_state, params):
    for v, m in zip(jax.tree.leaves(moment), jax.tree.leaves(mask), strict=True):
      np.testing.assert_array_equal(np.asarray(v)[~np.asarray(m)], 0.0)
