"""A prepared split as numpy arrays: decoded once (then cached), normalised per channel.

A split is read through ``tfds.data_source(..., builder_kwargs={'file_format': 'array_record'})``:
random access without TensorFlow, and no download. The decoded uint8 arrays are cached beside
the TFDS data, keyed by the dataset's metadata; a cache file that cannot be read back whole (cut
off, bit-flipped: its CRC fails) or holds arrays of the wrong shape is named in a warning, moved
aside and rebuilt from the prepared data. :func:`load_dataset` normalises every split per
channel by the training split's statistics.

With several processes (a multi-host run, see :mod:`snip_jax.parallel`) each process reads only
its own contiguous range of every split (:func:`snip_jax.parallel.process_range`), and the
training statistics are combined across processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from jax.experimental import multihost_utils

from snip_jax import files
from snip_jax.data.prepare import ensure_prepared, quiet_absl, tfds_builder
from snip_jax.data.specs import SPLITS, DatasetSpec, check_split, get_spec, shape_text
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
  spec = get_spec(name)
  with quiet_absl():
    try:
      source = tfds.data_source(
        spec.tfds_name,
        split=SPLITS[split],
        data_dir=data_dir,
        download=False,
        builder_kwargs={"file_format": "array_record"},
      )
    except ValueError as e:  # E.g. 'Paths sequence can not be of 0 length': an empty split.
      raise ValueError(_unreadable(name, split, data_dir, str(e))) from None
    if len(source) == 0:
      raise ValueError(_unreadable(name, split, data_dir, "it holds no examples"))
    keys = list(process_range(len(source), *shard))
    try:
      examples = source.__getitems__(keys)  # One call for all the records: faster.
    except TypeError:
      # `tfds.testing.mock_data` installs a `__getitems__` that cannot be called (it lacks
      # `self`); one record at a time gives the same examples.
      examples = [source[i] for i in keys]
  images = np.stack([e["image"] for e in examples]).astype(np.uint8)
  labels = np.array([e["label"] for e in examples], np.int32)
  problem = _check_decoded(spec, images, labels)
  if problem:
    raise ValueError(_unreadable(name, split, data_dir, problem))
  return images, labels


def _unreadable(name: str, split: str, data_dir: str, problem: str) -> str:
  """The one-line error for a prepared split that cannot be used, naming the folder to delete."""
  folder = tfds_builder(get_spec(name).tfds_name, data_dir).data_dir
  first_line = problem.strip().splitlines()[0] if problem.strip() else "unknown error"
  return (
    f"The {split} split of {name} prepared in {folder} cannot be used ({first_line}). Delete "
    f"{folder} and run again: snip-jax prepares it again from the original files."
  )


def _check_decoded(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray) -> str | None:
  """What is wrong with decoded arrays of a split of ``spec``'s dataset, or ``None``."""
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != spec.image_shape:
    return (
      f"images of shape {shape_text(images.shape[1:])} and type {images.dtype}, not "
      f"{shape_text(spec.image_shape)} uint8"
    )
  if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
    return f"{labels.shape} labels of type {labels.dtype} for {len(images)} images"
  if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
    return f"labels outside 0..{spec.num_classes - 1}"
  return None


def _read_cache(cache: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray] | None:
  """The arrays in the decode cache ``cache``, or ``None`` if there is none.

  A cache that cannot be read back whole or holds the wrong arrays is named in a warning and
  moved aside (to ``<name>.corrupt``, replacing an older one), so that it is rebuilt.
  """
  try:
    # Opened here, so that it is closed even when np.load fails on it.
    with open(cache, "rb") as f, np.load(f) as arrays:
      images, labels = arrays["images"], arrays["labels"]
    problem = _check_decoded(spec, images, labels)
  except FileNotFoundError:
    return None
  except Exception as e:  # A cut-off or bit-flipped zip raises whatever its parsers raise.
    problem = f"{type(e).__name__}: {e}".strip().splitlines()[0]
  if problem is None:
    return images, labels
  aside = cache.with_name(cache.name + ".corrupt")
  with contextlib.suppress(OSError):  # Another process may have moved it already.
    os.replace(cache, aside)
  warnings.warn(
    f"Decode cache {cache} cannot be used ({problem}): moved it to {aside.name} and rebuilding "
    "it from the prepared data.",
    stacklevel=3,
  )
  return None


def load_split(
  name: str, split: str, data_dir: str, shard: Shard = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a prepared split into ``(images [N, H, W, C] uint8, labels [N] int32)``.

  ``split`` is ``'train'`` (first 90% of TFDS train), ``'validation'`` (last 10%) or ``'test'``;
  ``shard`` picks a process's range of it (see :func:`read_prepared_split`). The decoded arrays
  are cached next to the TFDS data, so that a split's PNGs are decoded once, not every run; a
  cache file that cannot be read back (cut off, bit-flipped) or holds the wrong arrays is named
  in a warning, moved aside to ``<name>.corrupt`` and rebuilt.

  Raises:
    ValueError: the prepared split itself cannot be used (one line naming the folder to
      delete).
  """
  check_split(split)
  cache = _cache_path(name, split, data_dir, shard)
  cached = _read_cache(cache, get_spec(name))
  if cached is not None:
    return cached
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
