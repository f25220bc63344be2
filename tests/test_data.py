"""Offline data: IDX files, preparing the TFDS layout, reading it back, clear failures, batches."""

import gzip
import hashlib
import os

import jax
import numpy as np
import pytest
from helpers import refuse_network, write_idx, write_mnist_like

from snip_jax import data
from snip_jax.data import originals


@pytest.fixture
def no_network(monkeypatch):
  """Fails the test if anything tries to open a network connection."""
  refuse_network(monkeypatch)


def test_read_idx_round_trip(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(tmp_path / "a.gz", array)
  np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), array)


def test_read_idx_takes_the_digest_of_the_uncompressed_bytes_as_it_reads(tmp_path):
  array = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
  write_idx(tmp_path / "a.gz", array)
  write_idx(tmp_path / "a", array, compress=False)
  raw = (tmp_path / "a").read_bytes()
  assert len(raw) == 4 + 2 * 4 + 15  # Magic, two dims, the data.
  digests = {}
  for name in ("a.gz", "a"):
    np.testing.assert_array_equal(data.read_idx(tmp_path / name, digests=digests), array)
  expected = (27, hashlib.sha256(raw).hexdigest())
  assert digests == {str(tmp_path / "a.gz"): expected, str(tmp_path / "a"): expected}


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
  write_idx(tmp_path / "float.gz", np.zeros((2, 2)), magic_type=0x0D)
  with pytest.raises(ValueError, match="magic number"):
    data.read_idx(tmp_path / "float.gz")
  (tmp_path / "text").write_bytes(b"hello world")
  with pytest.raises(ValueError, match="magic number"):
    data.read_idx(tmp_path / "text")
  write_idx(tmp_path / "full", np.zeros((4, 5)), compress=False)
  (tmp_path / "short").write_bytes((tmp_path / "full").read_bytes()[:-3])
  with pytest.raises(ValueError, match="truncated"):
    data.read_idx(tmp_path / "short")
  (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
  with pytest.raises(ValueError, match="Cannot read IDX"):
    data.read_idx(tmp_path / "broken.gz")


def test_prepare_from_idx_then_read_through_tfds(tmp_path, no_network):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  arrays = write_mnist_like(idx_dir)
  assert data.ensure_prepared("mnist", str(data_dir), str(idx_dir)) == str(data_dir)
  assert data.is_prepared("mnist", str(data_dir))
  leftovers = [p.name for p in (data_dir / "mnist").iterdir() if "incomplete" in p.name]
  assert leftovers == []

  train_images, train_labels = arrays["train"]
  images, labels = data.load_split("mnist", "train", str(data_dir))
  assert images.shape == (18, 28, 28, 1) and images.dtype == np.uint8  # First 90%.
  np.testing.assert_array_equal(images[..., 0], train_images[:18])
  np.testing.assert_array_equal(labels, train_labels[:18])
  images, labels = data.load_split("mnist", "validation", str(data_dir))
  np.testing.assert_array_equal(images[..., 0], train_images[18:])
  images, labels = data.load_split("mnist", "test", str(data_dir))
  np.testing.assert_array_equal(images[..., 0], arrays["t10k"][0])
  # Second read comes from the decoded-array cache and is identical.
  cached_images, cached_labels = data.load_split("mnist", "test", str(data_dir))
  np.testing.assert_array_equal(cached_images, images)
  np.testing.assert_array_equal(cached_labels, labels)

  splits, num_classes = data.load_dataset("mnist", str(data_dir))
  assert num_classes == 10 and len(splits["train"]) == 18 and len(splits["test"]) == 10
  assert splits["train"].images.dtype == np.float32
  assert abs(float(splits["train"].images.mean())) < 1e-4  # Normalised by train statistics.


def test_leftover_unprepared_folder_is_named_not_overwritten(tmp_path):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  write_mnist_like(idx_dir)
  leftover = data_dir / "mnist" / "3.0.1"
  leftover.mkdir(parents=True)
  (leftover / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"partial")
  with pytest.raises(data.DataNotFoundError, match="interrupted build"):
    data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  assert [p.name for p in leftover.iterdir()] == ["mnist-train.tfrecord-00000-of-00001"]


def test_a_data_dir_another_process_prepared_meanwhile_is_kept(tmp_path, monkeypatch):
  """Processes sharing a data dir may prepare it at once: the last to finish keeps the first's."""
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  arrays = write_mnist_like(idx_dir)
  move = os.replace

  def other_process_finishes_first(src, dst):
    monkeypatch.setattr(os, "replace", move)
    data.prepare_from_source("mnist", str(idx_dir), str(data_dir))  # The other process.
    return move(src, dst)  # Ours: the dataset's directory is taken by now.

  monkeypatch.setattr(os, "replace", other_process_finishes_first)
  data.prepare_from_source("mnist", str(idx_dir), str(data_dir))
  assert data.is_prepared("mnist", str(data_dir))
  assert [p.name for p in (data_dir / "mnist").iterdir() if "incomplete" in p.name] == []
  images, _ = data.load_split("mnist", "test", str(data_dir))
  np.testing.assert_array_equal(images[..., 0], arrays["t10k"][0])


def test_missing_data_fails_at_once_naming_three_ways(tmp_path, no_network):
  with pytest.raises(data.DataNotFoundError) as info:
    data.ensure_prepared("mnist", str(tmp_path / "tfds"), str(tmp_path))
  message = str(info.value)
  assert "1. " in message and "2. " in message and "3. " in message
  assert "--config.source_dir" in message and "tfds build mnist" in message
  # TFDS needs TensorFlow to download and build (its MNIST builder decodes with it); we don't.
  assert "and TensorFlow (`pip install tensorflow`: TFDS needs it" in message
  with pytest.raises(data.DataNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
    data.ensure_prepared("fashion_mnist", str(tmp_path / "tfds"), str(tmp_path))
  with pytest.raises(data.DataNotFoundError, match=r"1\. python -m snip_jax\.data\.fetch mnist"):
    data.ensure_prepared("mnist", str(tmp_path / "tfds"), str(tmp_path))


def test_debians_fashion_mnist_files_are_the_originals(real_fashion_mnist):
  spec = data.get_spec("fashion_mnist")
  assert real_fashion_mnist in spec.default_source_dirs  # So preparation insists on them.
  assert [o.name for o in spec.originals] == [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
  ]
  for original in spec.originals:
    assert originals.is_original(os.path.join(real_fashion_mnist, original.name + ".gz"), original)


@pytest.mark.slow  # Prepares the whole of MNIST (~30 s) unless scripts/test.sh already has.
def test_real_mnist_prepares_with_its_original_counts_and_labels(real_mnist):
  spec = data.get_spec("mnist")
  assert spec.default_source_dirs[0] == "~/.cache/snip_jax/mnist"
  assert [(o.size, o.examples) for o in spec.originals] == [
    (47_040_016, 60_000),
    (60_008, 60_000),
    (7_840_016, 10_000),
    (10_008, 10_000),
  ]
  # Where every MNIST run reads it: the default data dir, prepared from the fetched originals
  # (once: scripts/test.sh prepares it before the tests, and preparation is idempotent).
  data_dir = data.ensure_prepared("mnist")
  train_images, train_labels = data.load_split("mnist", "train", data_dir)
  _, validation_labels = data.load_split("mnist", "validation", data_dir)
  test_images, test_labels = data.load_split("mnist", "test", data_dir)
  assert train_images.shape == (54_000, 28, 28, 1) and test_images.shape == (10_000, 28, 28, 1)
  assert len(validation_labels) == 6_000  # The last 10% of the 60,000, as in the paper.
  all_train = np.concatenate([train_labels, validation_labels])
  assert np.bincount(all_train).tolist() == [
    5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
  ]  # fmt: skip
  assert np.bincount(test_labels).tolist() == [
    980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
  ]  # fmt: skip
  assert train_labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:5].tolist() == [
    7,
    2,
    1,
    0,
    4,
  ]
  # The pixels are MNIST's, in its order: the first training image's bytes as the file holds them.
  with open(os.path.join(real_mnist, "train-images-idx3-ubyte"), "rb") as f:
    f.seek(16)
    first = np.frombuffer(f.read(28 * 28), np.uint8).reshape(28, 28)
  np.testing.assert_array_equal(train_images[0, ..., 0], first)


def test_unknown_dataset():
  with pytest.raises(ValueError, match="Unknown dataset 'cifar100'"):
    data.get_spec("cifar100")


def test_batches_are_seeded_and_cover_the_split():
  split = data.Split(np.arange(10, dtype=np.float32)[:, None], np.arange(10, dtype=np.int32))
  first = [y.tolist() for _, y in data.train_batches(split, 3, seed=7)]
  again = [y.tolist() for _, y in data.train_batches(split, 3, seed=7)]
  other = [y.tolist() for _, y in data.train_batches(split, 3, seed=8)]
  assert first == again and first != other
  assert len(first) == 3 and len({v for b in first for v in b}) == 9  # Remainder dropped.
  batches = list(data.eval_batches(split, 4))
  assert [b[2].tolist() for b in batches][-1] == [1.0, 1.0, 0.0, 0.0]
  assert sum(float(b[2].sum()) for b in batches) == 10
  with pytest.raises(ValueError, match="batch_size"):
    next(data.train_batches(split, 11, seed=0))


def test_each_epoch_seed_gives_its_own_shuffle():
  """The train loop seeds epoch ``e`` with the key data of ``fold_in(data_key, e)``: each epoch
  gets its own order, the same seed the same order, and a resumed epoch the rest of it."""
  split = data.Split(np.arange(40, dtype=np.float32)[:, None], np.arange(40, dtype=np.int32))
  data_key = jax.random.key(0)

  def epoch_order(epoch, start=0):
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(data_key, epoch)))
    return [y.tolist() for _, y in data.train_batches(split, 8, seed=seed, start=start)]

  orders = [epoch_order(epoch) for epoch in (1, 2, 3)]
  for order in orders:
    assert sorted(v for batch in order for v in batch) == list(range(40))
    assert order != [list(range(b, b + 8)) for b in range(0, 40, 8)]  # Shuffled.
  assert orders[0] != orders[1] != orders[2] != orders[0]
  assert epoch_order(2) == orders[1]
  assert epoch_order(2, start=3) == orders[1][3:]
  # Seeds that differ in their last word only: every word of the key data counts.
  last_word = [
    [y.tolist() for _, y in data.train_batches(split, 8, seed=np.asarray([3, w], np.uint32))]
    for w in (9, 10)
  ]
  assert last_word[0] != last_word[1]
