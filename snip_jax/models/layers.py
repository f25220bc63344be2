"""Layers shared by the models: a fast 2x2 max pool and the batch norm of the paper's nets."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 and ``'SAME'`` padding (odd sizes round up).

  A reshape followed by ``max`` computes what ``nn.max_pool(x, (2, 2), (2, 2), 'SAME')`` does,
  with a much cheaper backward pass on XLA:CPU (see ../shared/PERF-NOTES.md). An odd side is
  padded at the end with ``-inf``, which no maximum ever picks.
  """
  b, h, w, c = x_BxHxWxC.shape
  if h % 2 or w % 2:
    x_BxHxWxC = jnp.pad(
      x_BxHxWxC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf
    )
    h, w = h + h % 2, w + w % 2
  return jnp.max(x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def batch_norm(train: bool) -> functools.partial:
  """Batch norm as in the authors' TF code (``tf.layers.batch_normalization`` defaults).

  Momentum 0.99 and epsilon 1e-3. With ``train=False`` it normalises with the running
  statistics in the ``batch_stats`` collection; freshly initialised those are mean 0 and
  variance 1, which is how the authors score SNIP on the BatchNorm nets.
  """
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.99, epsilon=1e-3)


def conv(
  features: int,
  size: int,
  kernel_init: jax.nn.initializers.Initializer,
  name: str,
  strides: int = 1,
) -> nn.Conv:
  """A ``size`` x ``size`` conv with ``'SAME'`` padding and no bias, for use before batch norm.

  Batch norm's learned offset makes a bias before it redundant.
  """
  return nn.Conv(
    features,
    (size, size),
    strides=strides,
    padding="SAME",
    use_bias=False,
    kernel_init=kernel_init,
    name=name,
  )


def norm_relu(x: jax.Array, train: bool, name: str) -> jax.Array:
  """:func:`batch_norm` then ReLU."""
  return nn.relu(batch_norm(train)(name=name)(x))
