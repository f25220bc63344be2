"""Datasets through TensorFlow Datasets, prepared offline from local IDX files when needed.

Reading uses ``tfds.data_source(..., builder_kwargs={'file_format': 'array_record'})``: random
access without TensorFlow. Nothing here ever starts a download. :func:`ensure_prepared` either
finds the prepared TFDS dataset, or builds the standard TFDS layout (``dataset_info.json``,
``features.json``, array_record shards) from the original IDX files in a local directory, or
fails at once with a message naming the three ways to provide the data.

For training, a split is decoded once into numpy arrays (cached beside the TFDS data, keyed by
the dataset's metadata) and batches are cut from memory with a seeded per-epoch shuffle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

log = logging.getLogger(__name__)

_IDX_DTYPES = {0x08: np.uint8}
_IDX_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Our split names -> TFDS split strings. As in the paper, 10% of train is held out.
SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A dataset snip-jax can prepare offline from IDX files."""

  tfds_name: str
  num_classes: int
  #: Directories searched for the IDX files when no ``idx_dir`` is given.
  default_idx_dirs: tuple[str, ...]
  #: How to get the IDX files on this kind of machine, for the error message.
  install_hint: str


DATASETS: dict[str, DatasetSpec] = {
  "fashion_mnist": DatasetSpec(
    "fashion_mnist",
    10,
    ("/usr/share/datasets/fashion-mnist",),
    "apt-get install -y dataset-fashion-mnist   (Debian/Ubuntu: installs the IDX files in "
    "/usr/share/datasets/fashion-mnist, found automatically)",
  ),
  "mnist": DatasetSpec(
    "mnist",
    10,
    ("/usr/share/datasets/mnist",),
    "copy the four original MNIST IDX files into /usr/share/datasets/mnist (searched by default)",
  ),
}


class DataNotFoundError(FileNotFoundError):
  """The dataset is neither prepared nor preparable from local files."""


def get_spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
  return DATASETS[name]


def default_data_dir() -> str:
  """TFDS's data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


# --------------------------------------------------------------------------------------------
# IDX files.


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an IDX file (``.gz`` or plain) of unsigned bytes into an array.

  Raises:
    ValueError: on a wrong magic number, an unsupported element type or a truncated file.
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:  # gzip raises these on truncated or non-gzip input.
    raise ValueError(f"Cannot read IDX file {path!r}: {e}. Re-download or reinstall it.") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise ValueError(
      f"{path!r} is not an IDX file of unsigned bytes (magic number "
      f"{data[:4].hex() or 'missing'}; expected 0000080N). Re-download or reinstall it."
    )
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"IDX file {path!r} is truncated inside its header.")
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(shape))
  if len(data) != expected:
    raise ValueError(
      f"IDX file {path!r} holds {len(data)} bytes but its header {shape} needs {expected}: "
      "the file is truncated or corrupt. Re-download or reinstall it."
    )
  return np.frombuffer(data, _IDX_DTYPES[data[2]], offset=header).reshape(shape)


def _find_idx(directory: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    candidate = os.path.join(directory, name)
    if os.path.isfile(candidate):
      return candidate
  return None


def find_idx_files(directory: str) -> dict[str, tuple[str, str]] | None:
  """``{'train': (images, labels), 'test': (...)}`` if ``directory`` holds all four files."""
  found = {}
  for split, stems in _IDX_FILES.items():
    paths = tuple(_find_idx(directory, stem) for stem in stems)
    if None in paths:
      return None
    found[split] = paths
  return found


def read_idx_split(
  images_path: str, labels_path: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
  """Images ``[N, H, W]`` uint8 and labels ``[N]``, checked against each other."""
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(
      f"IDX files {images_path!r} ({images.shape}) and {labels_path!r} "
      f"({labels.shape}) do not form a dataset of images and labels."
    )
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f"{labels_path!r} has label {labels.max()} >= {num_classes} classes.")
  return images, labels


# --------------------------------------------------------------------------------------------
# The TFDS layout.


@contextlib.contextmanager
def _quiet_absl():
  """Hides TFDS's absl warnings that are expected here (no dataset_info yet, no OpenCV)."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds  # Imported lazily: it costs ~0.6 s.

  with _quiet_absl():
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")


def is_prepared(name: str, data_dir: str) -> bool:
  """Whether ``data_dir`` holds ``name`` prepared in the array_record format."""
  builder = _builder(get_spec(name).tfds_name, data_dir)
  with _quiet_absl():  # TFDS warns that an unprepared folder has no dataset_info.json.
    if not builder.is_prepared():
      return False
  if builder.info.file_format.value != "array_record":
    raise DataNotFoundError(
      f"{name} in {data_dir} was prepared as {builder.info.file_format.value}, but snip-jax "
      "reads array_record without TensorFlow. Rebuild it with `tfds build "
      f"{name} --file_format=array_record --data_dir={data_dir}`, or delete {builder.data_dir} "
      "so snip-jax can prepare it from local IDX files."
    )
  return True


def prepare_from_idx(name: str, idx_dir: str, data_dir: str) -> None:
  """Writes the standard TFDS layout of ``name`` into ``data_dir`` from local IDX files.

  The shards and metadata are written to a temporary directory and moved into place at the end,
  so an interrupted preparation leaves nothing half-written behind.
  """
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  from PIL import Image
  from tensorflow_datasets.core import example_serializer

  spec = get_spec(name)
  files = find_idx_files(idx_dir)
  if files is None:
    raise DataNotFoundError(
      f"{idx_dir!r} does not hold the four IDX files "
      f"{[s for stems in _IDX_FILES.values() for s in stems]} (optionally .gz)."
    )
  builder = _builder(spec.tfds_name, data_dir)
  final_dir = Path(builder.data_dir)
  if final_dir.exists() and any(final_dir.iterdir()):
    raise DataNotFoundError(
      f"{final_dir} exists but holds no prepared dataset (left by an interrupted build?). "
      "Remove it and run again; snip-jax will prepare it from the IDX files."
    )
  final_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.incomplete-", dir=final_dir.parent))
  try:
    features = builder.info.features
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    split_infos = []
    for split, (images_path, labels_path) in files.items():
      images, labels = read_idx_split(images_path, labels_path, spec.num_classes)
      log.info("Preparing %s/%s from %s (%d examples).", name, split, images_path, len(labels))
      template = tfds.core.ShardedFileTemplate(
        data_dir=tmp_dir, dataset_name=spec.tfds_name, split=split, filetype_suffix="array_record"
      )
      writer = array_record_module.ArrayRecordWriter(
        os.fspath(template.sharded_filepath(shard_index=0, num_shards=1)), "group_size:1"
      )
      num_bytes = 0
      for image, label in zip(images, labels, strict=True):
        example = features.encode_example({"image": Image.fromarray(image), "label": int(label)})
        record = serializer.serialize_example(example)
        num_bytes += len(record)
        writer.write(record)
      writer.close()
      split_infos.append(
        tfds.core.SplitInfo(
          name=split,
          shard_lengths=[len(labels)],
          num_bytes=num_bytes,
          filename_template=template.replace(data_dir=final_dir),
        )
      )
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.info.write_to_directory(tmp_dir)
    os.replace(tmp_dir, final_dir)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)


def ensure_prepared(name: str, data_dir: str | None = None, idx_dir: str | None = None) -> str:
  """Makes sure ``name`` can be read from ``data_dir`` without a network; returns ``data_dir``.

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory (default: :func:`default_data_dir`).
    idx_dir: a directory with the original IDX files to prepare from; when ``None`` the
      dataset's default directories are searched.

  Raises:
    DataNotFoundError: at once (no download is tried), naming the three ways to provide data.
  """
  spec = get_spec(name)
  data_dir = data_dir or default_data_dir()
  if is_prepared(name, data_dir):
    return data_dir
  candidates = [idx_dir] if idx_dir else list(spec.default_idx_dirs)
  for directory in candidates:
    if find_idx_files(directory) is not None:
      prepare_from_idx(name, directory, data_dir)
      return data_dir
  searched = ", ".join(repr(d) for d in candidates)
  raise DataNotFoundError(
    f"Dataset {name!r} is not prepared in {data_dir!r} and no IDX files were found in "
    f"{searched}. Provide it in one of three ways:\n"
    f"  1. {spec.install_hint};\n"
    f"  2. point --config.idx_dir at a directory holding train-images-idx3-ubyte[.gz], "
    f"train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz];\n"
    f"  3. on a machine with network access: `tfds build {spec.tfds_name} "
    f"--file_format=array_record --data_dir={data_dir}` (or set --config.data_dir / "
    f"TFDS_DATA_DIR to where it was built)."
  )


# --------------------------------------------------------------------------------------------
# Arrays and batches.


def _cache_path(name: str, split: str, data_dir: str) -> Path:
  builder = _builder(get_spec(name).tfds_name, data_dir)
  info = Path(builder.data_dir, "dataset_info.json").read_bytes()
  fingerprint = hashlib.sha256(info).hexdigest()[:16]
  tag = SPLITS[split].replace("[", "_").replace(":", "-").replace("%]", "pc")
  return Path(data_dir, "snip_jax_cache", f"{name}-{builder.version}-{tag}-{fingerprint}.npz")


def load_split(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a prepared split into ``(images [N, H, W, C] uint8, labels [N] int32)``.

  ``split`` is ``'train'`` (first 90% of TFDS train), ``'validation'`` (last 10%) or ``'test'``.
  The decoded arrays are cached next to the TFDS data (decoding 60k PNGs takes ~15 s).
  """
  import tensorflow_datasets as tfds

  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLITS)}.")
  cache = _cache_path(name, split, data_dir)
  if cache.exists():
    with np.load(cache) as arrays:
      return arrays["images"], arrays["labels"]
  source = tfds.data_source(
    get_spec(name).tfds_name,
    split=SPLITS[split],
    data_dir=data_dir,
    download=False,
    builder_kwargs={"file_format": "array_record"},
  )
  with _quiet_absl():
    examples = source.__getitems__(list(range(len(source))))
  images = np.stack([e["image"] for e in examples]).astype(np.uint8)
  labels = np.array([e["label"] for e in examples], np.int32)
  cache.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".tmp", delete=False) as f:
    np.savez(f, images=images, labels=labels)
  os.replace(f.name, cache)
  return images, labels


@dataclasses.dataclass(frozen=True)
class Split:
  """Normalised images ``[N, H, W, C]`` float32 and labels ``[N]`` int32 in host memory."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


def load_dataset(
  name: str, data_dir: str | None = None, idx_dir: str | None = None
) -> tuple[dict[str, Split], int]:
  """All three splits, normalised by the training split's pixel mean and std.

  Returns:
    ``({'train': ..., 'validation': ..., 'test': ...}, num_classes)``.
  """
  data_dir = ensure_prepared(name, data_dir, idx_dir)
  raw = {split: load_split(name, split, data_dir) for split in SPLITS}
  train_pixels = raw["train"][0].astype(np.float32) / 255.0
  mean, std = float(train_pixels.mean()), float(train_pixels.std())
  splits = {
    split: Split(((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32), labels)
    for split, (images, labels) in raw.items()
  }
  return splits, get_spec(name).num_classes


def train_batches(
  split: Split, batch_size: int, seed: ArrayLike
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled full batches (the remainder is dropped, so shapes never change).

  Args:
    split: the training split.
    batch_size: examples per batch.
    seed: anything ``np.random.default_rng`` takes (the train loop passes the key data of
      ``fold_in(data_key, epoch)``); the order depends only on it.
  """
  if not 0 < batch_size <= len(split):
    raise ValueError(f"batch_size={batch_size} must be in [1, {len(split)}] (the split size).")
  order = np.random.default_rng(seed).permutation(len(split))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    idx = order[start : start + batch_size]
    yield split.images[idx], split.labels[idx]


def eval_batches(
  split: Split, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example once, in order, as ``(images, labels, weights)`` of a fixed batch size.

  The last batch is padded with copies of example 0 whose weight is 0, so one compiled eval
  step serves the whole split.
  """
  n = len(split)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    weights = (idx < n).astype(np.float32)
    idx = np.where(idx < n, idx, 0)
    yield split.images[idx], split.labels[idx], weights
