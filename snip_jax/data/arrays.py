"""A prepared split as numpy arrays: decoded once (then cached), normalised per channel.

A split is read through ``tfds.data_source(..., builder_kwargs={'file_format': 'array_record'})``:
random access without TensorFlow, and no download. The decoded uint8 arrays are cached beside
the TFDS data, keyed by the dataset's metadata. :func:`load_dataset` normalises every split per
channel by the training split's statistics.

With several processes (a multi-host run, see :mod:`snip_jax.parallel`) each process reads only
its own contiguous range of every split (:func:`snip_jax.parallel.process_range`), and the
training statistics are combined across processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from jax.experimental import multihost_utils

from snip_jax import files
from snip_jax.data.prepare import ensure_prepared, quiet_absl, tfds_builder
from snip_jax.data.specs import SPLITS, check_split, get_spec
from snip_jax.parallel import process_range

#: ``(process index, process count)``: which share of a split a process reads.
Shard = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Split:
  """Normalised images ``[N, H, W, C]`` float32 and labels ``[N]`` int32 in host memory."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


def _cache_path(name: str, split: str, data_dir: str, shard: Shard) -> Path:
  builder = tfds_builder(get_spec(name).tfds_name, data_dir)
  info = Path(builder.data_dir, "dataset_info.json").read_bytes()
  fingerprint = hashlib.sha256(info).hexdigest()[:16]
  tag = SPLITS[split].replace("[", "_").replace(":", "-").replace("%]", "pc")
  if shard[1] > 1:
    tag += f"-process{shard[0]}of{shard[1]}"
  return Path(data_dir, "snip_jax_cache", f"{name}-{builder.version}-{tag}-{fingerprint}.npz")


def read_prepared_split(
  name: str, split: str, data_dir: str, shard: Shard = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a split of a prepared dataset through ``tfds.data_source`` (no cache, no download).

  Works under ``tfds.testing.mock_data``, which replaces the data with random examples.

  Args:
    name: a key of :data:`DATASETS`.
    split: ``'train'`` (first 90% of TFDS train), ``'validation'`` (last 10%) or ``'test'``.
    data_dir: TFDS data directory holding the prepared dataset.
    shard: ``(index, count)``: decode only the :func:`~snip_jax.parallel.process_range` of
      process ``index`` of ``count`` (random access: the other records are not read).

  Returns:
    ``(images [N, H, W, C] uint8, labels [N] int32)``.
  """
  import tensorflow_datasets as tfds

  check_split(split)
  with quiet_absl():
    source = tfds.data_source(
      get_spec(name).tfds_name,
      split=SPLITS[split],
      data_dir=data_dir,
      download=False,
      builder_kwargs={"file_format": "array_record"},
    )
    keys = list(process_range(len(source), *shard))
    try:
      examples = source.__getitems__(keys)  # One call for all the records: faster.
    except TypeError:
      # `tfds.testing.mock_data` installs a `__getitems__` that cannot be called (it lacks
      # `self`); one record at a time gives the same examples.
      examples = [source[i] for i in keys]
  images = np.stack([e["image"] for e in examples]).astype(np.uint8)
  labels = np.array([e["label"] for e in examples], np.int32)
  return images, labels


def load_split(
  name: str, split: str, data_dir: str, shard: Shard = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a prepared split into ``(images [N, H, W, C] uint8, labels [N] int32)``.

  ``split`` is ``'train'`` (first 90% of TFDS train), ``'validation'`` (last 10%) or ``'test'``;
  ``shard`` picks a process's range of it (see :func:`read_prepared_split`). The decoded arrays
  are cached next to the TFDS data, so that a split's PNGs are decoded once, not every run.
  """
  check_split(split)
  cache = _cache_path(name, split, data_dir, shard)
  if cache.exists():
    with np.load(cache) as arrays:
      return arrays["images"], arrays["labels"]
  images, labels = read_prepared_split(name, split, data_dir, shard)
  cache.parent.mkdir(parents=True, exist_ok=True)
  with files.atomic_writer(cache, "wb") as f:
    np.savez(f, images=images, labels=labels)
  return images, labels


def _unit_float(images: np.ndarray) -> np.ndarray:
  """uint8 images -> a new float32 array in [0, 1]."""
  pixels = images.astype(np.float32)
  pixels /= 255.0  # In place: the same float32 values as `pixels / 255.0`, one copy fewer.
  return pixels


def channel_stats(pixels_NxHxWxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation over examples, rows and columns.

  Returns:
    ``(mean_C, std_C)``, float32.
  """
  means, stds = [], []
  for c in range(pixels_NxHxWxC.shape[-1]):
    # Each channel is reduced as one contiguous array (a copy for several channels, a view for
    # one), so numpy sums it pairwise: float32 `mean(axis=(0, 1, 2))` would add row after row
    # into one accumulator, whose rounding error grows with the number of pixels. A one-channel
    # dataset gets bit for bit the whole-array `mean()` / `std()`.
    channel = np.ascontiguousarray(pixels_NxHxWxC[..., c])
    means.append(channel.mean())
    stds.append(channel.std())
    del channel  # Before the next channel's copy: at most one copy (and std's temporary) alive.
  return np.array(means, np.float32), np.array(stds, np.float32)


def _global_channel_stats(pixels_NxHxWxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """:func:`channel_stats` of the union of every process's ``pixels`` (a collective: every
  process must call it)."""
  pixels = pixels_NxHxWxC.reshape(-1, pixels_NxHxWxC.shape[-1]).astype(np.float64)
  count = np.full(pixels.shape[-1], len(pixels), np.float64)
  mean = pixels.mean(0)
  m2 = ((pixels - mean) ** 2).sum(0)  # Centred here, so float32 transport loses nothing much.
  # [processes, 3, C]: each process's (count, mean, sum of squared deviations) per channel.
  gathered = np.asarray(
    multihost_utils.process_allgather(np.stack([count, mean, m2]).astype(np.float32)), np.float64
  )
  counts, means, m2s = gathered[:, 0], gathered[:, 1], gathered[:, 2]
  total = counts.sum(0)
  mean_C = (counts * means).sum(0) / total
  var_C = (m2s + counts * (means - mean_C) ** 2).sum(0) / total
  return mean_C.astype(np.float32), np.sqrt(var_C).astype(np.float32)


def normalise(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 normalised per channel by their own mean and std (as
  :func:`load_dataset` normalises a training split)."""
  pixels = _unit_float(images)
  mean_C, std_C = channel_stats(pixels)
  pixels -= mean_C
  pixels /= std_C
  return pixels


def load_dataset(
  name: str, data_dir: str | None = None, source_dir: str | None = None, shard: Shard = (0, 1)
) -> tuple[dict[str, Split], int]:
  """All three splits, each channel normalised by the training split's mean and std.

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory (default: :func:`default_data_dir`).
    source_dir: a directory with the original files, used if the dataset is not prepared yet
      (see :func:`ensure_prepared`).
    shard: ``(jax.process_index(), jax.process_count())`` in a multi-process run: this process
      reads only its :func:`~snip_jax.parallel.process_range` of each split, and the
      normalisation statistics of the whole training split are combined across processes (so
      every process must call this).

  Returns:
    ``({'train': ..., 'validation': ..., 'test': ...}, num_classes)``.
  """
  data_dir = ensure_prepared(name, data_dir, source_dir)
  raw = {split: load_split(name, split, data_dir, shard) for split in SPLITS}
  train_pixels = _unit_float(raw["train"][0])
  if shard[1] == 1:
    mean_C, std_C = channel_stats(train_pixels)
  else:
    mean_C, std_C = _global_channel_stats(train_pixels)
  splits = {}
  for split, (images, labels) in raw.items():
    pixels = train_pixels if split == "train" else _unit_float(images)
    # In place, to hold one float copy of each split (CIFAR-10 train is 553 MB as float32).
    pixels -= mean_C
    pixels /= std_C
    splits[split] = Split(pixels, labels)
  return splits, get_spec(name).num_classes
