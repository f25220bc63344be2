"""Layers shared by the models: a fast convolution and 2x2 max pool, and the paper's batch norm.

Both fast layers compute exactly what Flax's ``nn.Conv`` / ``nn.max_pool`` compute (same
parameters, same results up to float summation order); they only choose operations that XLA
compiles well on CPU (see ``benchmarks/``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn


def max_pool_2x2(x_BxHxWxC: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2 and ``'SAME'`` padding (odd sizes round up).

  Computes what ``nn.max_pool(x, (2, 2), (2, 2), 'SAME')`` computes, value and gradient: a
  window's gradient goes to its first maximum in row-major order, as XLA's ``select_and_scatter``
  routes it (and as PyTorch's ``max_pool2d`` does). Written as a reshape and a ``max`` with an
  elementwise derivative (a ``custom_jvp``, so forward-over-reverse works too), it is much
  cheaper on XLA:CPU than ``reduce_window``'s backward, and cheaper than the derivative of
  ``max`` itself, which splits a tied window's gradient and needs a second reduction. An odd
  side is padded at the end with ``-inf``, which no maximum ever picks.
  """
  h, w = x_BxHxWxC.shape[1:3]
  if h % 2 or w % 2:
    x_BxHxWxC = jnp.pad(
      x_BxHxWxC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf
    )
  return _max_pool_2x2_even(x_BxHxWxC)


def _windows(x_BxHxWxC: jax.Array) -> jax.Array:
  """``[B, H/2, 2, W/2, 2, C]``: the 2x2 windows of an even-sized input."""
  b, h, w, c = x_BxHxWxC.shape
  return x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_jvp
def _max_pool_2x2_even(x_BxHxWxC: jax.Array) -> jax.Array:
  return jnp.max(_windows(x_BxHxWxC), axis=(2, 4))


@_max_pool_2x2_even.defjvp
def _max_pool_2x2_even_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  windows = _windows(x)
  y = jnp.max(windows, axis=(2, 4))
  hit = windows == y[:, :, None, :, None, :]
  # The first maximum of each window, in row-major order.
  h00, h01, h10, h11 = (hit[:, :, i, :, j] for i in (0, 1) for j in (0, 1))
  first = jnp.stack(
    [
      jnp.stack([h00, h01 & ~h00], axis=3),
      jnp.stack([h10 & ~(h00 | h01), h11 & ~(h00 | h01 | h10)], axis=3),
    ],
    axis=2,
  )
  return y, jnp.sum(jnp.where(first, _windows(dx), jnp.zeros((), dx.dtype)), axis=(2, 4))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """``nn.Conv``'s ``'SAME'`` padding: output ``ceil(size / stride)``, extra pixel at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


#: Outputs of at most this many pixels (VGG's 2x2 block) are computed as im2col by ``'auto'``.
IM2COL_MAX_PIXELS = 4


class Conv(nn.Module):
  """A 2D convolution with ``nn.Conv``'s parameters and result, formulated for XLA:CPU.

  ``impl`` picks how it is computed (same params, same outputs and gradients up to float
  summation order):

  * ``'xla'``: XLA's convolution (``lax.conv_general_dilated``, what ``nn.Conv`` calls);
  * ``'im2col'``: the ``kh * kw`` shifted (strided) slices of the padded input concatenated
    along the channels into ``[B, H', W', kh * kw * C]`` patches, and one matmul with the
    kernel reshaped to ``[kh * kw * C, F]``;
  * ``'auto'`` (default): ``'im2col'`` for outputs of at most :data:`IM2COL_MAX_PIXELS` pixels,
    ``'xla'`` otherwise. On VGG's 2x2x512 convs XLA:CPU's convolution, forward and backward,
    takes ~40x longer than im2col; otherwise the whole train steps of LeNet-5-Caffe and VGG-D
    are faster with XLA's own convolution (in a step compiled with
    :func:`snip_jax.xla.compiler_options`) than with im2col (BENCHMARKS.md, "Convolutions").

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
  impl: str = "auto"  # Or "xla", "im2col".

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    if self.padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}.")
    if self.impl not in ("auto", "xla", "im2col"):
      raise ValueError(f"impl must be 'auto', 'xla' or 'im2col', got {self.impl!r}.")
    kh, kw = self.kernel_size
    s = self.strides
    c = x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, c, self.features))
    x = x_BxHxWxC
    if self.padding == "SAME":
      pads = [_same_padding(n, k, s) for n, k in zip(x.shape[1:3], (kh, kw), strict=True)]
    else:
      pads = [(0, 0), (0, 0)]
    out_h = (x.shape[1] + sum(pads[0]) - kh) // s + 1
    out_w = (x.shape[2] + sum(pads[1]) - kw) // s + 1
    impl = self.impl
    if impl == "auto":
      impl = "im2col" if out_h * out_w <= IM2COL_MAX_PIXELS else "xla"
    if impl == "xla":
      y = jax.lax.conv_general_dilated(
        x, kernel, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    else:
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
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
