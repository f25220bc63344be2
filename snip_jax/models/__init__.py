"""Model registry: ``get_model(name, ...)`` builds a Flax module of the paper by name."""

from __future__ import annotations

from flax import linen as nn

from snip_jax.init import get_initializer
from snip_jax.models.lenet import LeNet5Caffe, LeNet300100

MODELS: dict[str, type[nn.Module]] = {
  "lenet300": LeNet300100,
  "lenet5": LeNet5Caffe,
}


def get_model(name: str, *, num_classes: int = 10, init: str = "vs_h") -> nn.Module:
  """The model called ``name`` with kernels initialised by ``init`` (see :mod:`snip_jax.init`)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
  return MODELS[name](num_classes=num_classes, kernel_init=get_initializer(init))


__all__ = ["MODELS", "LeNet5Caffe", "LeNet300100", "get_model"]
