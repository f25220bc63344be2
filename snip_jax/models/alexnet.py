"""AlexNet-s and AlexNet-b of the paper, adapted to 32x32 CIFAR-10 inputs as in the authors' code.

Five convolutions with AlexNet's kernel sizes and filter counts (96, 256, 384, 384, 256), each
followed by batch norm and ReLU, with strides that bring 32x32 down to 1x1; then two hidden
fully connected layers (batch norm + ReLU) and the classifier. The two variants differ only
in the width of the hidden fully connected layers.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from snip_jax.models.layers import conv, norm_relu

# (features, kernel size, stride) of the five convolutions; 'SAME' padding everywhere.
_CONVS = ((96, 11, 2), (256, 5, 2), (384, 3, 2), (384, 3, 2), (256, 3, 2))


class AlexNet(nn.Module):
  """AlexNet for CIFAR-10 with hidden fully connected layers of ``fc_width`` units.

  The paper's text and the authors' code agree with its parameter counts: AlexNet-s uses 1024
  units (``k=1`` in the authors' code: 5,073,642 parameters, paper 5.1M) and AlexNet-b 2048
  (``k=2``: 8,495,850, paper 8.5M).
  """

  fc_width: int = 1024
  num_classes: int = 10
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, (features, size, stride) in enumerate(_CONVS, start=1):
      x = conv(features, size, self.kernel_init, f"conv{i}", strides=stride)(x)
      x = norm_relu(x, train, f"conv{i}_norm")
    x = x.reshape(x.shape[0], -1)
    for i in (6, 7):
      # No bias before batch norm: its learned offset makes one redundant.
      x = nn.Dense(self.fc_width, use_bias=False, kernel_init=self.kernel_init, name=f"fc{i}")(x)
      x = norm_relu(x, train, f"fc{i}_norm")
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="fc8")(x)
