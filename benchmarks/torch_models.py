"""A PyTorch reference for a SNIP *masked training step*, to time against our JAX step.

What is imitated: the popular PyTorch SNIP ports keep a dense weight tensor next to a fixed 0/1
mask of the same shape, registered as a buffer, and multiply the two in every forward pass
(``F.linear(x, self.weight * self.weight_mask, self.bias)``, and likewise ``F.conv2d``). After
each ``optimizer.step()`` they multiply the weights by the mask again, so that momentum and
weight decay cannot revive pruned weights. Sparsity therefore saves no arithmetic: each step pays
for the dense forward and backward passes, one extra elementwise product per layer and pass, and
the re-masking after the update. That is the cost our benchmark compares our JAX step with.

Why these models: :data:`MODELS` are LeNet-300-100, LeNet-5-Caffe and VGG-D built to match
:mod:`snip_jax.models` layer for layer (same widths, kernel sizes, padding, pooling, biases, batch
norm epsilon and momentum, kernel initialiser), so that both frameworks do the same arithmetic.
As the ports do, they use PyTorch's default NCHW layout. Differences that do not change the
work per step: flattening NCHW activations orders the first fully connected layer's inputs
differently from our NHWC models (the same weights, permuted), and PyTorch's batch norm keeps
an unbiased running variance where Flax keeps a biased one.

This module is imported by the benchmark suite only; PyTorch is not a dependency of
:mod:`snip_jax`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's conventional alias)
from torch import nn

#: The models :func:`build` knows, named as in :mod:`snip_jax.models`.
MODELS = ("lenet300", "lenet5", "vgg_d")

_NUM_CLASSES = 10
# Input of one example, NCHW without the batch axis.
_INPUT_SHAPES = {"lenet300": (1, 28, 28), "lenet5": (1, 28, 28), "vgg_d": (3, 32, 32)}
# VGG-D's convs per stage (all 3x3); a 2x2 max pool closes every stage.
_VGG_D_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Batch norm of the authors' TF code, as in snip_jax.models.layers.batch_norm: epsilon 1e-3 and
# a running average that keeps 0.99 of the old value (PyTorch's momentum weighs the new one).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
# Standard deviation of a standard normal truncated to [-2, 2], as in jax.nn.initializers.
_TRUNCATED_NORMAL_STD = 0.87962566103423978
# The optimiser of the benchmark.
_LR, _MOMENTUM, _WEIGHT_DECAY = 0.1, 0.9, 5e-4


class MaskedLinear(nn.Linear):
  """A fully connected layer whose weight is multiplied by the fixed buffer ``weight_mask``."""

  def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
    """Builds the layer with an all-ones mask.

    Args:
      in_features: Size of each input.
      out_features: Size of each output.
      bias: Whether to add a learned bias.
    """
    super().__init__(in_features, out_features, bias=bias)
    self.register_buffer("weight_mask", torch.ones_like(self.weight))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Applies the masked weight: ``x @ (weight * weight_mask).T + bias``."""
    return F.linear(x, self.weight * self.weight_mask, self.bias)


class MaskedConv2d(nn.Conv2d):
  """A 2D convolution whose weight is multiplied by the fixed buffer ``weight_mask``."""

  def __init__(
    self, in_channels: int, out_channels: int, kernel_size: int, padding: int, bias: bool
  ) -> None:
    """Builds a stride-1 convolution with an all-ones mask.

    Args:
      in_channels: Channels of the input.
      out_channels: Channels of the output.
      kernel_size: Side of the square kernel.
      padding: Zero padding on each side (``kernel_size // 2`` gives ``'SAME'``, 0 ``'VALID'``).
      bias: Whether to add a learned bias.
    """
    super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    self.register_buffer("weight_mask", torch.ones_like(self.weight))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Convolves ``x`` with the masked weight ``weight * weight_mask``."""
    return F.conv2d(
      x,
      self.weight * self.weight_mask,
      self.bias,
      self.stride,
      self.padding,
      self.dilation,
      self.groups,
    )


def _lenet300() -> nn.Module:
  return nn.Sequential(
    nn.Flatten(),
    MaskedLinear(784, 300),
    nn.ReLU(),
    MaskedLinear(300, 100),
    nn.ReLU(),
    MaskedLinear(100, _NUM_CLASSES),
  )


def _lenet5() -> nn.Module:
  # 28x28 -> conv 24x24 -> pool 12x12 -> conv 8x8 -> pool 4x4, so 50 * 4 * 4 = 800 features;
  # as in Caffe's LeNet, no ReLU after the convolutions.
  return nn.Sequential(
    MaskedConv2d(1, 20, 5, padding=0, bias=True),
    nn.MaxPool2d(2),
    MaskedConv2d(20, 50, 5, padding=0, bias=True),
    nn.MaxPool2d(2),
    nn.Flatten(),
    MaskedLinear(800, 500),
    nn.ReLU(),
    MaskedLinear(500, _NUM_CLASSES),
  )


def _vgg_d() -> nn.Module:
  layers: list[nn.Module] = []
  channels = 3
  for stage in _VGG_D_STAGES:
    for features in stage:
      # No bias before batch norm, whose learned offset makes one redundant.
      layers += [
        MaskedConv2d(channels, features, 3, padding=1, bias=False),
        nn.BatchNorm2d(features, eps=_BN_EPS, momentum=_BN_MOMENTUM),
        nn.ReLU(),
      ]
      channels = features
    layers.append(nn.MaxPool2d(2))
  # Five pools take 32x32 down to 1x1.
  layers.append(nn.Flatten())
  for _ in range(2):
    layers += [
      MaskedLinear(channels, 512, bias=False),
      nn.BatchNorm1d(512, eps=_BN_EPS, momentum=_BN_MOMENTUM),
      nn.ReLU(),
    ]
    channels = 512
  layers.append(MaskedLinear(channels, _NUM_CLASSES))
  return nn.Sequential(*layers)


_BUILDERS: dict[str, Callable[[], nn.Module]] = {
  "lenet300": _lenet300,
  "lenet5": _lenet5,
  "vgg_d": _vgg_d,
}


def masked_layers(model: nn.Module) -> list[MaskedLinear | MaskedConv2d]:
  """The layers of ``model`` whose weights carry a mask, in module order.

  Args:
    model: A model from :func:`build`.

  Returns:
    Its :class:`MaskedLinear` and :class:`MaskedConv2d` modules.
  """
  return [m for m in model.modules() if isinstance(m, MaskedLinear | MaskedConv2d)]


@torch.no_grad()
def _init_like_flax(model: nn.Module, generator: torch.Generator) -> None:
  """Initialises as :mod:`snip_jax.models` does by default (``vs_h``).

  Kernels get He et al.'s variance scaling (fan-in, scale 2, truncated normal) and biases zero;
  batch norm keeps PyTorch's defaults (scale 1, offset 0), which are also Flax's.
  """
  for layer in masked_layers(model):
    fan_in = layer.weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
    if layer.bias is not None:
      nn.init.zeros_(layer.bias)


@torch.no_grad()
def _random_masks(model: nn.Module, density: float, generator: torch.Generator) -> None:
  """Keeps ``round(density * n)`` of all ``n`` prunable weights, chosen uniformly at random.

  Like SNIP's, the selection is global over the network rather than per layer. Pruned weights
  are set to zero, as the ports do once the mask is in place.
  """
  layers = masked_layers(model)
  total = sum(layer.weight.numel() for layer in layers)
  flat_mask = torch.zeros(total)
  flat_mask[torch.randperm(total, generator=generator)[: round(density * total)]] = 1.0
  for layer, mask in zip(layers, flat_mask.split([m.weight.numel() for m in layers]), strict=True):
    layer.weight_mask.copy_(mask.view_as(layer.weight))
    layer.weight.mul_(layer.weight_mask)


def build(name: str, density: float = 0.05, seed: int = 0) -> nn.Module:
  """The masked PyTorch twin of ``snip_jax.models.get_model(name)``.

  Args:
    name: One of :data:`MODELS`.
    density: Fraction of the prunable weights (conv and linear weights; not biases, not batch
      norm) that the random mask keeps.
    seed: Seeds the initial weights and the mask; the same seed gives the same model.

  Returns:
    The model, in training mode, with its masks in the ``weight_mask`` buffers.

  Raises:
    ValueError: If ``name`` is not in :data:`MODELS` or ``density`` is not in ``[0, 1]``.
  """
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model {name!r}; choose one of {list(MODELS)}.")
  if not 0.0 <= density <= 1.0:
    raise ValueError(f"density must lie in [0, 1], got {density}.")
  generator = torch.Generator().manual_seed(seed)
  model = _BUILDERS[name]()
  _init_like_flax(model, generator)
  _random_masks(model, density, generator)
  return model.train()


def input_shape(name: str) -> tuple[int, int, int]:
  """The shape of one input example of model ``name``, NCHW without the batch axis.

  Args:
    name: One of :data:`MODELS`.

  Returns:
    ``(channels, height, width)``.

  Raises:
    ValueError: If ``name`` is not in :data:`MODELS`.
  """
  if name not in _INPUT_SHAPES:
    raise ValueError(f"Unknown model {name!r}; choose one of {list(MODELS)}.")
  return _INPUT_SHAPES[name]


def num_params(model: nn.Module) -> int:
  """The number of trainable parameters of ``model``.

  Masked-out weights count (they are stored densely); batch norm's running statistics do not
  (they are buffers), which matches counting Flax's ``params`` collection.

  Args:
    model: Any PyTorch module.

  Returns:
    The total number of elements of its parameters.
  """
  return sum(p.numel() for p in model.parameters())


class TrainStep:
  """One masked SGD training step on a fixed batch, as a zero-argument callable.

  Attributes:
    model: The masked model being trained.
    optimizer: Its SGD optimiser.
    inputs: The fixed batch of inputs, NCHW float32.
    labels: The fixed int64 labels of ``inputs``.
  """

  def __init__(
    self,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
  ) -> None:
    """Wraps a model from :func:`build`, its optimiser and a batch."""
    self.model = model
    self.optimizer = optimizer
    self.inputs = inputs
    self.labels = labels
    self._layers = masked_layers(model)

  def __call__(self) -> float:
    """Runs one step and returns the loss before the update; the float waits for the step."""
    self.optimizer.zero_grad()
    loss = F.cross_entropy(self.model(self.inputs), self.labels)
    loss.backward()
    self.optimizer.step()
    # The ports' `weight.data.mul_(mask)`: keep pruned weights at zero under momentum and decay.
    with torch.no_grad():
      for layer in self._layers:
        layer.weight.mul_(layer.weight_mask)
    return loss.item()


def make_step(
  name: str, batch_size: int, *, threads: int, seed: int = 0, device: str = "cpu"
) -> TrainStep:
  """A zero-argument callable that runs one masked SGD training step of model ``name``.

  Builds the model with :func:`build` (default density), SGD (learning rate 0.1, momentum 0.9,
  weight decay 5e-4) and one fixed random batch (standard normal float32 inputs, int64 labels in
  ``[0, 10)``), and sets ``torch.set_num_threads(threads)``, which holds process-wide. The model,
  its masks and the batch are made on the CPU (the same numbers on every device), then moved to
  ``device``.

  Args:
    name: One of :data:`MODELS`.
    batch_size: Examples per step.
    threads: Intra-op threads PyTorch may use.
    seed: Seeds the model, its mask and the batch.
    device: Where the step runs: ``"cpu"``, or ``"cuda"`` to compare with JAX on a GPU.

  Returns:
    ``step``, a :class:`TrainStep`: ``step()`` zeroes the gradients, computes the mean
    cross-entropy of the batch, back-propagates, updates the weights, re-applies the masks to
    them, and returns the loss (before the update) as a Python float. ``step.model`` is the
    model it trains.

  Raises:
    ValueError: If ``device`` is a CUDA device and this PyTorch has none.
  """
  if device.startswith("cuda") and not torch.cuda.is_available():
    raise ValueError(
      f"device={device!r} but this PyTorch has no CUDA device: install PyTorch's CUDA build, "
      "or pass device='cpu'."
    )
  torch.set_num_threads(threads)
  # Moved before the optimizer is made, so that it holds the parameters on the device.
  model = build(name, seed=seed).to(device)
  optimizer = torch.optim.SGD(
    model.parameters(), lr=_LR, momentum=_MOMENTUM, weight_decay=_WEIGHT_DECAY
  )
  generator = torch.Generator().manual_seed(seed + 1)
  inputs = torch.randn((batch_size, *input_shape(name)), generator=generator)
  labels = torch.randint(0, _NUM_CLASSES, (batch_size,), generator=generator)
  return TrainStep(model, optimizer, inputs.to(device), labels.to(device))
