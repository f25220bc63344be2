"""Layers shared by the models: a fast convolution and 2x2 max pool, and the paper's batch norm.

Both fast layers compute exactly what Flax's ``nn.Conv`` / ``nn.max_pool`` compute (same
parameters, same results up to float summation order); they only choose operations that XLA
compiles well on CPU (see ``benchmarks/`` and ../shared/PERF-NOTES.md).
"""

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


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """``nn.Conv``'s ``'SAME'`` padding: output ``ceil(size / stride)``, extra pixel at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class Conv(nn.Module):
  """A 2D convolution with ``nn.Conv``'s parameters and result, computed as one matmul.

  The ``kh * kw`` shifted (strided) slices of the padded input are concatenated along the
  channels, giving the ``[B, H', W', kh * kw * C]`` patches, which one matmul with the
  ``[kh, kw, C, F]`` kernel reshaped to ``[kh * kw * C, F]`` turns into the output. XLA:CPU runs
  this several times faster than its own convolution, forward and backward, on the paper's
  nets (LeNet-5-Caffe's 5x5 convs; VGG's 3x3 convs, which its convolution handles
  particularly badly at small spatial sizes); on accelerators it is a plain large matmul.
  Params are ``kernel`` (HWIO) and ``bias``, named, shaped and initialised as ``nn.Conv``'s, so
  checkpoints, masks and seeds carry over.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = "SAME"  # Or "VALID".
  use_bias: bool = True
  kernel_init: jax.nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: jax.nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    if self.padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}.")
    kh, kw = self.kernel_size
    s = self.strides
    c = x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, c, self.features))
    x = x_BxHxWxC
    if self.padding == "SAME":
      pads = [_same_padding(n, k, s) for n, k in zip(x.shape[1:3], (kh, kw), strict=True)]
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_h, out_w = (x.shape[1] - kh) // s + 1, (x.shape[2] - kw) // s + 1
    slices = [
      x[:, i : i + (out_h - 1) * s + 1 : s, j : j + (out_w - 1) * s + 1 : s, :]
      for i in range(kh)
      for j in range(kw)
    ]
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    y = patches @ kernel.reshape(kh * kw * c, self.features)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


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
) -> Conv:
  """A ``size`` x ``size`` conv with ``'SAME'`` padding and no bias, for use before batch norm.

  Batch norm's learned offset makes a bias before it redundant.
  """
  return Conv(
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
