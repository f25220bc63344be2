"""Shared fixtures."""

import os

import pytest

FASHION_MNIST_IDX = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def real_fashion_mnist() -> str:
  """The Debian IDX directory; skipped where it is absent, except in CI where it must exist."""
  if not os.path.isdir(FASHION_MNIST_IDX):
    if os.environ.get("CI"):
      pytest.fail(f"{FASHION_MNIST_IDX} missing in CI: install dataset-fashion-mnist.")
    pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist).")
  return FASHION_MNIST_IDX
