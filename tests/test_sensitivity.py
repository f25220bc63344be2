"""Connection sensitivity: literal scores on a hand-built net, and ∂L/∂c = w ⊙ ∂L/∂w."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mlp_apply, random_params

from snip_jax import connection_sensitivity, kernels_and_biases


def two_layer_loss(params, x, target):
  h = jax.nn.relu(x @ params["w1"])
  y = h @ params["w2"]
  return 0.5 * jnp.sum((y - target) ** 2)


def test_literal_scores_two_layer_net():
  # x = [1, 2]; h = relu(x W1) = [3, 1]; y = h W2 = 5; L = (5 - 1)^2 / 2 = 8, dL/dy = 4.
  # dL/dW2 = 4 h = [12, 4]        -> |W2 * dL/dW2| = [24, 4]
  # dL/dW1 = x^T (4 W2^T) = [[8, -4], [16, -8]] -> |W1 * dL/dW1| = [[8, 4], [16, 8]]
  # Sum of |g| = 64.
  params = {"w1": jnp.array([[1.0, -1.0], [1.0, 1.0]]), "w2": jnp.array([[2.0], [-1.0]])}
  x, target = jnp.array([[1.0, 2.0]]), jnp.array([[1.0]])

  raw = connection_sensitivity(two_layer_loss, params, x, target, normalize=False)
  np.testing.assert_allclose(raw["w1"], [[8.0, 4.0], [16.0, 8.0]])
  np.testing.assert_allclose(raw["w2"], [[24.0], [4.0]])

  scores = connection_sensitivity(two_layer_loss, params, x, target)
  np.testing.assert_allclose(scores["w1"], [[0.125, 0.0625], [0.25, 0.125]])
  np.testing.assert_allclose(scores["w2"], [[0.375], [0.0625]])


def test_non_prunable_leaves_score_zero_and_are_excluded_from_the_sum():
  params = {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "bias": jnp.array([5.0, 7.0])}
  x = jnp.array([[1.0, 2.0]])

  def loss(p, x):  # dL/dW_ij = x_i, so g = W_ij x_i = [[1, -2], [6, 1]], sum |g| = 10.
    return jnp.sum(x @ p["kernel"] + p["bias"])

  scores = connection_sensitivity(loss, params, x)
  np.testing.assert_allclose(scores["kernel"], [[0.1, 0.2], [0.6, 0.1]])
  np.testing.assert_array_equal(scores["bias"], [0.0, 0.0])

  with_bias = connection_sensitivity(loss, params, x, filter_fn=kernels_and_biases)
  # Bias: g = b * dL/db = b * 1 = [5, 7]; sum |g| = 10 + 12 = 22.
  np.testing.assert_allclose(with_bias["bias"], [5 / 22, 7 / 22], rtol=1e-6)
  np.testing.assert_allclose(with_bias["kernel"], np.array([[1, 2], [6, 1]]) / 22, rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_gradient_wrt_ones_mask_equals_w_times_grad_w(seed):
  key = jax.random.key(seed)
  params = random_params(key)
  kx, ky = jax.random.split(jax.random.fold_in(key, 1))
  x, y = jax.random.normal(kx, (8, 6)), jax.random.randint(ky, (8,), 0, 3)

  def loss(p, x, y):
    logits = mlp_apply(p, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  grads = jax.grad(loss)(params, x, y)
  expected = jax.tree.map(
    lambda w, g: jnp.abs(w * g) if w.ndim >= 2 else jnp.zeros_like(w), params, grads
  )
  scores = jax.jit(lambda p: connection_sensitivity(loss, p, x, y, normalize=False))(params)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), scores, expected
  )
  normalized = connection_sensitivity(loss, params, x, y)
  total = sum(float(jnp.sum(s)) for s in jax.tree.leaves(normalized))
  assert total == pytest.approx(1.0, rel=1e-5)
