"""Test helpers: small random pytrees, a functional MLP, and MNIST-format IDX files."""

import gzip

import jax
import numpy as np


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


def write_idx(path, array: np.ndarray, magic_type: int = 0x08, compress: bool = True) -> None:
  """Writes ``array`` as an IDX file (gzipped unless ``compress`` is false)."""
  header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
    int(d).to_bytes(4, "big") for d in array.shape
  )
  payload = header + array.astype(np.uint8).tobytes()
  if compress:
    with gzip.open(path, "wb") as f:
      f.write(payload)
  else:
    path.write_bytes(payload)


def write_mnist_like(directory, num_train=20, num_test=10, seed=0):
  """Random 28x28 MNIST-format IDX files; returns ``{prefix: (images, labels)}``."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    # Labels uncompressed: both forms are accepted.
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=False)
    arrays[prefix] = (images, labels)
  return arrays
