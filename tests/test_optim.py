"""The masked optimizer keeps pruned weights and their optimizer state at exactly zero."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import random_params

from snip_jax import apply_mask, masked
from snip_jax.optim import UnmaskedParamsWarning, schedule_free_eval_params, zero_masked_moments

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


def test_params_never_masked_are_pruned_by_the_first_update():
  """Forgetting apply_mask does not leave a dense network: the first update zeroes the pruned
  params, and they stay exactly zero."""
  params = random_params(jax.random.key(0))
  mask = random_mask(params, jax.random.key(1))
  tx = masked(optax.sgd(0.1, momentum=0.9), mask)
  with pytest.warns(UnmaskedParamsWarning, match="apply_mask"):
    state = tx.init(params)  # Not apply_mask-ed: the pruned weights are still their init values.
  pruned = [~m for m in jax.tree.leaves(mask)]
  assert any(
    np.any(p[~k]) for p, k in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
  )
  for step in range(3):
    grads = jax.tree.map(lambda p, s=step: jnp.full_like(p, s + 1.0), params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
    for p, off in zip(jax.tree.leaves(params), pruned, strict=True):
      assert np.all(np.asarray(p)[np.asarray(off)] == 0.0)
      assert not np.any(np.signbit(np.asarray(p)[np.asarray(off)]))  # +0.0, not -0.0.


def test_low_precision_updates_still_prune_float32_params_exactly():
  """bfloat16 gradients (mixed precision) for float32 params never masked: ``-param`` rounded
  to bfloat16 would leave each pruned weight a rounding error away from 0 after the update."""
  params = random_params(jax.random.key(0))
  mask = random_mask(params, jax.random.key(1))
  tx = masked(optax.sgd(0.1), mask)
  with pytest.warns(UnmaskedParamsWarning):
    state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bfloat16), params)
  inner_updates, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params), params)
  assert {u.dtype for u in jax.tree.leaves(inner_updates)} == {jnp.dtype(jnp.bfloat16)}
  updates, state = jax.jit(tx.update)(grads, state, params)
  params = optax.apply_updates(params, updates)
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True):
    assert p.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0.0)


def test_init_warns_about_unmasked_params_only():
  """Without params, update cannot prune: init says so when its params are not masked, and is
  silent on masked params (and under jit, where it cannot look)."""
  params = random_params(jax.random.key(0))
  mask = random_mask(params, jax.random.key(1))
  tx = masked(optax.sgd(0.1), mask)
  with pytest.warns(UnmaskedParamsWarning, match="tx.update\\(grads, state, params\\)"):
    tx.init(params)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    tx.init(apply_mask(params, mask))
    jax.jit(tx.init)(params)
  # A NaN at a pruned coordinate: no update can make it 0.0, whatever update is given.
  nan_pruned = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.nan), params, mask)
  with pytest.warns(
    UnmaskedParamsWarning, match=r"not finite there, which no update can make 0\.0"
  ):
    tx.init(nan_pruned)


def test_extra_args_reach_the_inner_optimizer():
  """optax.contrib's loss-aware optimizers take value=loss; masked passes it on."""
  params = random_params(jax.random.key(0))
  mask = random_mask(params, jax.random.key(1))
  params = apply_mask(params, mask)
  grads = jax.tree.map(jnp.ones_like, params)
  for inner in (
    optax.contrib.momo(0.1),
    optax.polyak_sgd(),
    optax.chain(optax.adam(1e-2), optax.contrib.reduce_on_plateau()),
  ):
    tx = masked(inner, mask)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, value=jnp.asarray(1.5))
    new = optax.apply_updates(params, updates)
    for p, keep in zip(jax.tree.leaves(new), jax.tree.leaves(mask), strict=True):
      assert np.all(np.asarray(p)[~np.asarray(keep)] == 0.0)
    assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True)
    )


def test_schedule_free_eval_params_through_the_masked_state():
  params = random_params(jax.random.key(0))
  mask = random_mask(params, jax.random.key(1))
  params = apply_mask(params, mask)
  tx = masked(optax.contrib.schedule_free_sgd(0.1), mask)
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    params = optax.apply_updates(params, updates)
  evaluated = schedule_free_eval_params(state, params)
  expected = optax.contrib.schedule_free_eval_params(state.inner_state, params)
  for got, want, keep in zip(
    jax.tree.leaves(evaluated), jax.tree.leaves(expected), jax.tree.leaves(mask), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(got), np.where(keep, want, 0.0))
  with pytest.raises(ValueError, match="holds 0"):
    schedule_free_eval_params(masked(optax.sgd(0.1), mask).init(params), params)
