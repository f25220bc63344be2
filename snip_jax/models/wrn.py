"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis 2016) for 32x32 CIFAR-10 inputs.

A 3x3 conv of 16 filters, then three groups of ``n = (d - 4) / 6`` pre-activation basic blocks
of widths 16k, 32k, 64k (strides 1, 2, 2), then batch norm, ReLU, global average pooling and the
classifier. A block whose input and output differ in width or resolution has a 1x1 conv on its
shortcut. No dropout, as in the paper's runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from snip_jax.models.layers import conv, norm_relu


class WideBasicBlock(nn.Module):
  """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the (projected) shortcut."""

  features: int
  strides: int
  train: bool
  kernel_init: jax.nn.initializers.Initializer

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = norm_relu(x, self.train, "norm1")
    # The shortcut of a widening/downsampling block sees the pre-activated input.
    shortcut = x
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = conv(self.features, 1, self.kernel_init, "shortcut", strides=self.strides)(y)
    y = conv(self.features, 3, self.kernel_init, "conv1", strides=self.strides)(y)
    y = norm_relu(y, self.train, "norm2")
    y = conv(self.features, 3, self.kernel_init, "conv2")(y)
    return y + shortcut


class WideResNet(nn.Module):
  """WRN-``depth``-``width`` for CIFAR."""

  depth: int = 16
  width: int = 8
  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4 (e.g. 16, 22, 28), got {self.depth}.")
    blocks_per_group = (self.depth - 4) // 6
    x = conv(16, 3, self.kernel_init, "conv0")(x)
    for group, (features, strides) in enumerate(
      ((16 * self.width, 1), (32 * self.width, 2), (64 * self.width, 2)), start=1
    ):
      for block in range(blocks_per_group):
        x = WideBasicBlock(
          features,
          strides if block == 0 else 1,
          train,
          self.kernel_init,
          name=f"group{group}_block{block}",
        )(x)
    x = norm_relu(x, train, "final_norm")
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="fc")(x)
