"""The mask-pictures experiment's data: the training split of each prepared dataset, and MNIST
left out of --quick, saying so, where it is not available."""

import dataclasses

import numpy as np
import pytest

import mask_pictures
from snip_jax import data
from snip_jax.data import specs


def test_load_images_reads_the_normalised_training_split(tiny_mnist):
  images, labels = mask_pictures.load_images("mnist", tiny_mnist)
  raw_images, raw_labels = data.load_split("mnist", "train", tiny_mnist)
  assert images.shape == (180, 28, 28, 1) and images.dtype == np.float32  # 90% of 200.
  np.testing.assert_array_equal(labels, raw_labels)
  np.testing.assert_allclose(images, data.normalise(raw_images), rtol=0, atol=1e-6)
  assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-3


def test_quick_leaves_out_an_unavailable_mnist_saying_how_to_get_it(
  tiny_mnist, tmp_path, monkeypatch, capsys
):
  assert mask_pictures.available_datasets(tiny_mnist, quick=True) == ["fashion_mnist", "mnist"]
  # No MNIST prepared in tmp_path, and no original files where they are searched.
  spec = dataclasses.replace(specs.DATASETS["mnist"], default_source_dirs=(str(tmp_path / "no"),))
  monkeypatch.setitem(specs.DATASETS, "mnist", spec)
  assert mask_pictures.available_datasets(str(tmp_path), quick=True) == ["fashion_mnist"]
  assert "`python -m snip_jax.data.fetch mnist`" in capsys.readouterr().out
  # The full run needs both: loading MNIST then fails, naming the fetcher.
  assert mask_pictures.available_datasets(str(tmp_path), quick=False) == ["fashion_mnist", "mnist"]
  with pytest.raises(data.DataNotFoundError, match=r"python -m snip_jax\.data\.fetch mnist"):
    mask_pictures.load_images("mnist", str(tmp_path))
