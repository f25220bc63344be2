"""VGG-C, VGG-D and VGG-like of the paper, for 32x32 CIFAR-10 inputs as in the authors' code.

The convolutional part is Simonyan & Zisserman's configuration C (1x1 convs closing the last
three stages) or D (VGG-16), each conv followed by batch norm and ReLU, with five 2x2 max pools
that take 32x32 down to 1x1. The classifier is smaller than ImageNet VGG's: two hidden fully
connected layers of 512 units with batch norm (C, D), or one (VGG-like, Zagoruyko's CIFAR
VGG). No dropout: batch norm instead, as the authors do.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from snip_jax.models.layers import conv, max_pool_2x2, norm_relu

# Per stage: the (features, kernel size) of its convs; a 2x2 max pool closes every stage.
_STAGES = {
  "C": (
    ((64, 3), (64, 3)),
    ((128, 3), (128, 3)),
    ((256, 3), (256, 3), (256, 1)),
    ((512, 3), (512, 3), (512, 1)),
    ((512, 3), (512, 3), (512, 1)),
  ),
  "D": (
    ((64, 3), (64, 3)),
    ((128, 3), (128, 3)),
    ((256, 3), (256, 3), (256, 3)),
    ((512, 3), (512, 3), (512, 3)),
    ((512, 3), (512, 3), (512, 3)),
  ),
}


class VGG(nn.Module):
  """VGG ``version`` 'C', 'D' or 'like' (D's convs, one hidden fully connected layer)."""

  version: str = "D"
  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.version not in ("C", "D", "like"):
      raise ValueError(f"Unknown VGG version {self.version!r}; choose 'C', 'D' or 'like'.")
    stages = _STAGES["D" if self.version == "like" else self.version]
    layer = 0
    for stage in stages:
      for features, size in stage:
        layer += 1
        x = conv(features, size, self.kernel_init, f"conv{layer}")(x)
        x = norm_relu(x, train, f"conv{layer}_norm")
      x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for _ in range(1 if self.version == "like" else 2):
      layer += 1
      # No bias before batch norm: its learned offset makes one redundant.
      x = nn.Dense(512, use_bias=False, kernel_init=self.kernel_init, name=f"fc{layer}")(x)
      x = norm_relu(x, train, f"fc{layer}_norm")
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name=f"fc{layer + 1}")(x)
