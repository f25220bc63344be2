"""Small random pytrees and a functional MLP shared by the tests."""

import jax


def random_params(key: jax.Array, sizes=((6, 5), (5, 4), (4, 3))) -> dict:
  """An MLP-shaped params dict: kernels ``[fan_in, fan_out]`` and bias vectors."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(sizes):
    key, k1, k2 = jax.random.split(key, 3)
    params[f"Dense_{i}"] = {
      "kernel": jax.random.normal(k1, (fan_in, fan_out)),
      "bias": jax.random.normal(k2, (fan_out,)),
    }
  return params


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
  """ReLU MLP over ``params`` from :func:`random_params`."""
  layers = [params[k] for k in sorted(params)]
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return x @ layers[-1]["kernel"] + layers[-1]["bias"]
