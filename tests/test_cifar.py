"""CIFAR-10 offline: original archives, the TFDS layout, per-channel statistics, augmentation."""

import itertools
import os
import pickle
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import refuse_network

from benchmarks.mock_data import cifar10_batch_bytes, python2_pickle, write_cifar10
from snip_jax import data


@pytest.fixture
def no_network(monkeypatch):
  """Fails the test if anything tries to open a network connection."""
  refuse_network(monkeypatch)


# ------------------------------------------------------------------------------------------
# Parsing the original files.


def _known_row() -> np.ndarray:
  """3072 distinct-ish bytes: the pixel at row ``i`` of the file is ``i % 251``."""
  return (np.arange(3072) % 251).astype(np.uint8)


def _check_known_pixels(image: np.ndarray) -> None:
  """The file stores 1024 red, 1024 green, 1024 blue bytes, each plane row by row."""
  row = _known_row()
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8
  for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1), (5, 7, 2), (31, 31, 2)]:
    assert image[y, x, c] == row[c * 1024 + y * 32 + x]


def test_parse_binary_batch_puts_pixels_in_hwc_order():
  row = _known_row()
  record = bytes([7]) + row.tobytes()
  images, labels = data.parse_cifar10_binary(record * 2, "batch.bin")
  assert images.shape == (2, 32, 32, 3) and labels.tolist() == [7, 7]
  _check_known_pixels(images[1])


# The originals name numpy 1's numpy.core (numpy 2's is numpy._core): no warning either way.
@pytest.mark.filterwarnings("error::DeprecationWarning")
@pytest.mark.parametrize("protocol", ["python2", 4, 5])
def test_parse_pickled_batch_puts_pixels_in_hwc_order(protocol):
  row = _known_row()
  batch = {b"data": np.stack([row, row[::-1]]), b"labels": [3, 9], b"batch_label": b"x"}
  if protocol == "python2":
    payload = python2_pickle(batch)
    assert b"cnumpy.core.multiarray\n_reconstruct" in payload
  else:
    payload = pickle.dumps(batch, protocol=protocol)
  images, labels = data.parse_cifar10_pickle(payload, "data_batch_1")
  assert labels.tolist() == [3, 9]
  _check_known_pixels(images[0])
  np.testing.assert_array_equal(images[1], row[::-1].reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.parametrize("binary", [False, True], ids=["python", "binary"])
@pytest.mark.parametrize("layout", ["archive", "extracted", "files_in_source_dir"])
def test_read_cifar10_round_trip(tmp_path, binary, layout):
  written = write_cifar10(tmp_path, binary=binary, archive=layout == "archive")
  source_dir = tmp_path
  if layout == "files_in_source_dir":
    source_dir = tmp_path / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
  found = data.find_cifar10_source(str(source_dir))
  assert found is not None
  arrays = data.read_cifar10(found)
  assert set(arrays) == {"train", "test"}
  for split, (images, labels) in written.items():
    assert arrays[split][0].shape == (len(labels), 32, 32, 3)
    assert arrays[split][0].dtype == np.uint8
    np.testing.assert_array_equal(arrays[split][0], images)
    np.testing.assert_array_equal(arrays[split][1], labels)


def test_extracted_folder_is_preferred_to_the_archive(tmp_path):
  write_cifar10(tmp_path, archive=True)
  write_cifar10(tmp_path, archive=False)
  assert data.find_cifar10_source(str(tmp_path)) == str(tmp_path / "cifar-10-batches-py")
  assert data.find_cifar10_source(str(tmp_path / "nowhere")) is None


def test_truncated_or_wrong_archive_is_named(tmp_path):
  write_cifar10(tmp_path, binary=True)
  archive = tmp_path / "cifar-10-binary.tar.gz"
  archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
  with pytest.raises((ValueError, data.DataNotFoundError), match=r"cifar-10-binary\.tar\.gz"):
    data.read_cifar10(archive)
  archive.write_bytes(b"<html>404 Not Found</html>")
  with pytest.raises(
    ValueError, match=r"(?s)Cannot read the archive .*cifar-10-binary\.tar\.gz.*kriz"
  ):
    data.read_cifar10(archive)


def test_corrupt_batch_files_are_named(tmp_path):
  write_cifar10(tmp_path, binary=True, archive=False)
  batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
  batch.write_bytes(batch.read_bytes()[:-10])
  with pytest.raises(ValueError, match=r"data_batch_3\.bin.*truncated"):
    data.read_cifar10(tmp_path / "cifar-10-batches-bin")

  images = np.zeros((1, 32, 32, 3), np.uint8)
  batch.write_bytes(cifar10_batch_bytes(images, [12], "data_batch_3", binary=True))
  with pytest.raises(ValueError, match=r"data_batch_3\.bin.* label 12"):
    data.read_cifar10(tmp_path / "cifar-10-batches-bin")

  write_cifar10(tmp_path, binary=False, archive=False)
  pickled = tmp_path / "cifar-10-batches-py" / "test_batch"
  pickled.write_bytes(pickled.read_bytes()[:100])
  with pytest.raises(ValueError, match=r"Cannot unpickle .*test_batch"):
    data.read_cifar10(tmp_path / "cifar-10-batches-py")
  pickled.write_bytes(python2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
  with pytest.raises(ValueError, match=r"test_batch.*uint8 \[N, 3072\]"):
    data.read_cifar10(tmp_path / "cifar-10-batches-py")


@pytest.mark.parametrize("archive", [True, False], ids=["archive", "extracted"])
def test_missing_batch_is_named(tmp_path, archive):
  write_cifar10(tmp_path, archive=archive, skip=("data_batch_4",))
  found = data.find_cifar10_source(str(tmp_path))
  with pytest.raises(data.DataNotFoundError, match="data_batch_4"):
    data.read_cifar10(found)


class _RunsACommand:
  """Pickles as a call of ``os.system``: what a malicious 'batch' would hold."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_pickle_with_other_globals_is_refused_not_run(tmp_path):
  marker = tmp_path / "was_run"
  batch = {b"data": _RunsACommand(marker), b"labels": [0]}
  for payload in python2_pickle(batch), pickle.dumps(batch, protocol=5):
    with pytest.raises(ValueError, match=r"refusing to load the global (posix|nt|os)\.system"):
      data.parse_cifar10_pickle(payload, "data_batch_1")
  assert not marker.exists()

  write_cifar10(tmp_path, archive=False)
  (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(payload)
  with pytest.raises(ValueError, match=r"data_batch_2.*refusing"):
    data.read_cifar10(tmp_path / "cifar-10-batches-py")
  assert not marker.exists()


def test_missing_cifar10_fails_at_once_naming_three_ways(tmp_path, no_network):
  start = time.monotonic()
  with pytest.raises(data.DataNotFoundError) as info:
    data.ensure_prepared("cifar10", str(tmp_path / "tfds"), str(tmp_path))
  assert time.monotonic() - start < 30  # An offline download attempt would hang ~200 s.
  message = str(info.value)
  assert "1. " in message and "2. " in message and "3. " in message
  assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
  assert "--config.source_dir" in message and "cifar-10-binary.tar.gz" in message
  assert "tfds build cifar10" in message


# ------------------------------------------------------------------------------------------
# The TFDS layout and the arrays.


@pytest.mark.parametrize("binary", [False, True], ids=["python", "binary"])
def test_prepare_cifar10_then_read_through_tfds(tmp_path, binary, no_network):
  source_dir, data_dir = tmp_path / "source", str(tmp_path / "tfds")
  source_dir.mkdir()
  written = write_cifar10(source_dir, binary=binary)
  assert data.ensure_prepared("cifar10", data_dir, str(source_dir)) == data_dir
  assert data.is_prepared("cifar10", data_dir)

  train_images, train_labels = written["train"]  # 20 images: 18 train, 2 validation.
  images, labels = data.load_split("cifar10", "train", data_dir)
  assert images.shape == (18, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, train_images[:18])
  np.testing.assert_array_equal(labels, train_labels[:18])
  images, labels = data.load_split("cifar10", "validation", data_dir)
  np.testing.assert_array_equal(images, train_images[18:])
  images, labels = data.load_split("cifar10", "test", data_dir)
  np.testing.assert_array_equal(images, written["test"][0])
  np.testing.assert_array_equal(labels, written["test"][1])

  source = tfds.data_source("cifar10", split="train[90%:]", data_dir=data_dir, download=False)
  assert [source[i]["id"] for i in range(len(source))] == [b"train_00018", b"train_00019"]
  source = tfds.data_source("cifar10", split="test", data_dir=data_dir, download=False)
  assert source[5]["id"] == b"test_00005"
  assert source.dataset_info.features["label"].names[:2] == ["airplane", "automobile"]


def test_load_dataset_normalises_each_channel(tmp_path):
  source_dir = tmp_path / "source"
  source_dir.mkdir()
  write_cifar10(source_dir)
  splits, num_classes = data.load_dataset("cifar10", str(tmp_path / "tfds"), str(source_dir))
  assert num_classes == 10
  train = splits["train"].images
  assert train.shape == (18, 32, 32, 3) and train.dtype == np.float32
  np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1, atol=1e-5)
  # The other splits use the training statistics.
  raw_train = data.load_split("cifar10", "train", str(tmp_path / "tfds"))[0] / 255.0
  raw_test = data.load_split("cifar10", "test", str(tmp_path / "tfds"))[0] / 255.0
  expected = (raw_test - raw_train.mean(axis=(0, 1, 2))) / raw_train.std(axis=(0, 1, 2))
  np.testing.assert_allclose(splits["test"].images, expected, atol=1e-5)


def test_channel_stats():
  rng = np.random.default_rng(0)
  pixels = np.stack([rng.normal(m, s, (50, 4, 4)) for m, s in [(1, 2), (-3, 0.5)]], -1)
  mean, std = data.channel_stats(pixels.astype(np.float32))
  assert mean.dtype == std.dtype == np.float32
  np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(std, pixels.std(axis=(0, 1, 2)), rtol=1e-5)
  # One channel: exactly the whole-array statistics that MNIST used before channels.
  one = rng.random((30, 5, 5, 1), dtype=np.float32)
  mean, std = data.channel_stats(one)
  assert mean[0] == np.float32(float(one.mean())) and std[0] == np.float32(float(one.std()))


def test_read_prepared_split_under_tfds_mock_data(tmp_path, no_network):
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    for split in data.SPLITS:
      images, labels = data.read_prepared_split("cifar10", split, str(tmp_path))
      assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
      assert labels.shape == (5,) and labels.dtype == np.int32
      assert labels.min() >= 0 and labels.max() < 10
  with pytest.raises(ValueError, match="Unknown split"):
    data.read_prepared_split("cifar10", "val", str(tmp_path))


def test_training_pipeline_on_tfds_mock_data(tmp_path, no_network):
  """Mock CIFAR-10 -> per-channel normalisation -> augmented batches of the train loop."""
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    images, labels = data.read_prepared_split("cifar10", "train", str(tmp_path))
  pixels = images.astype(np.float32) / 255.0
  mean_C, std_C = data.channel_stats(pixels)
  split = data.Split((pixels - mean_C) / std_C, labels)
  batches = list(data.train_batches(split, 16, seed=3, augment=True))
  assert len(batches) == 2
  for batch_images, batch_labels in batches:
    assert batch_images.shape == (16, 32, 32, 3) and batch_images.dtype == np.float32
    assert batch_labels.shape == (16,) and batch_labels.dtype == np.int32
    # Every value is a normalised pixel or the 0 (channel mean) a translation fills in.
    assert batch_images.min() >= split.images.min() and batch_images.max() <= split.images.max()
  again = list(data.train_batches(split, 16, seed=3, augment=True))
  np.testing.assert_array_equal(batches[0][0], again[0][0])


# ------------------------------------------------------------------------------------------
# Augmentation.


def _translated(image: np.ndarray, flip: bool, dy: int, dx: int) -> np.ndarray:
  """Reference: ``out[y, x] = flipped[y - dy, x - dx]``, zero outside, by slicing."""
  source = image[:, ::-1] if flip else image
  H, W = image.shape[:2]
  out = np.zeros_like(image)
  out[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = source[
    max(-dy, 0) : H - max(dy, 0), max(-dx, 0) : W - max(dx, 0)
  ]
  return out


def _coordinate_images(batch: int, size: int = 32, channels: int = 3) -> np.ndarray:
  """Images whose every value is distinct and non-zero: 1 + its (example, y, x, c) index."""
  return np.arange(1, batch * size * size * channels + 1, dtype=np.float32).reshape(
    batch, size, size, channels
  )


def test_augment_is_a_flip_and_a_bounded_translation_per_example():
  images = _coordinate_images(64)
  out = data.augment_batch(images, np.random.default_rng(0))
  assert out.shape == images.shape and out.dtype == images.dtype
  params = []
  for image, augmented in zip(images, out, strict=True):
    matches = [
      (flip, dy, dx)
      for flip, dy, dx in itertools.product([False, True], range(-4, 5), range(-4, 5))
      if np.array_equal(augmented, _translated(image, flip, dy, dx))
    ]
    assert len(matches) == 1, "not a flip plus a translation by at most 4 pixels"
    params.append(matches[0])
  flips, dys, dxs = zip(*params, strict=True)
  assert set(flips) == {False, True}
  assert len(set(dys)) >= 7 and len(set(dxs)) >= 7
  assert any(dy != dx for _, dy, dx in params)  # The two axes are drawn independently.


def test_augment_details():
  images = np.random.default_rng(1).integers(1, 256, (16, 8, 6, 2), dtype=np.uint8)
  first = data.augment_batch(images, np.random.default_rng(5))
  assert first.dtype == np.uint8 and first.shape == images.shape
  np.testing.assert_array_equal(first, data.augment_batch(images, np.random.default_rng(5)))
  assert not np.array_equal(first, data.augment_batch(images, np.random.default_rng(6)))
  # Without shifts, each example is itself or its mirror image.
  flipped = data.augment_batch(images, np.random.default_rng(0), max_shift=0)
  for image, out in zip(images, flipped, strict=True):
    assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
  with pytest.raises(ValueError, match="B, H, W, C"):
    data.augment_batch(images[0], np.random.default_rng(0))


def test_train_batches_augment_is_seeded_and_keeps_the_order():
  split = data.Split(_coordinate_images(10, size=8, channels=1), np.arange(10, dtype=np.int32))

  def epoch(seed, augment):
    return list(data.train_batches(split, 4, seed=seed, augment=augment))

  plain, augmented = epoch(7, False), epoch(7, True)
  order = np.random.default_rng(7).permutation(10)
  for i, (images, labels) in enumerate(plain):  # Unchanged: a plain seeded permutation.
    np.testing.assert_array_equal(labels, order[4 * i : 4 * i + 4])
    np.testing.assert_array_equal(images, split.images[labels])
  assert [y.tolist() for _, y in augmented] == [y.tolist() for _, y in plain]
  assert not all(np.array_equal(a, p) for (a, _), (p, _) in zip(augmented, plain, strict=True))
  again, other = epoch(7, True), epoch(8, True)
  assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(augmented, again, strict=True))
  assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(augmented, other, strict=True))


def test_train_batches_from_a_start_batch_are_the_rest_of_the_epoch():
  # A resumed run starts mid-epoch: its batches, augmentation included, are the full epoch's.
  split = data.Split(_coordinate_images(20, size=8, channels=1), np.arange(20, dtype=np.int32))
  seed = np.asarray([3, 9], np.uint32)  # Key data, as the train loop passes.
  full = list(data.train_batches(split, 4, seed=seed, augment=True))
  for start in (0, 2, 5):
    rest = list(data.train_batches(split, 4, seed=seed, augment=True, start=start))
    assert len(rest) == len(full) - start
    for (images, labels), (full_images, full_labels) in zip(rest, full[start:], strict=True):
      np.testing.assert_array_equal(labels, full_labels)
      np.testing.assert_array_equal(images, full_images)
