"""The LeNets of the paper: LeNet-300-100 and LeNet-5-Caffe (LeCun et al. 1998).

Inputs are NHWC images; outputs are logits ``[batch, num_classes]``.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from snip_jax.models import layers


class LeNet300100(nn.Module):
  """Fully connected 784-300-100-10 with ReLU: 266,610 params (266,200 in kernels)."""

  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout or normalisation.
    x = x.reshape(x.shape[0], -1)
    for width in (300, 100):
      x = nn.relu(nn.Dense(width, kernel_init=self.kernel_init)(x))
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


class LeNet5Caffe(nn.Module):
  """Caffe's LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, ReLU, fc 10: 431,080 params.

  As in Caffe's ``lenet_train_test.prototxt`` and the SNIP authors' code, the only nonlinearity
  is the ReLU after fc 500: the convolutions are followed by max pooling alone.
  """

  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()
  #: The convolution: ``layers.Conv`` (XLA's convolution at these sizes, bit for bit what
  #: ``nn.Conv`` computes); any module with ``nn.Conv``'s signature and params fits.
  conv: type[nn.Module] = layers.Conv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    for features in (20, 50):
      x = self.conv(features, (5, 5), padding="VALID", kernel_init=self.kernel_init)(x)
      x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(500, kernel_init=self.kernel_init)(x))
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)
