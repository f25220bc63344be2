"""Offline preparation: the standard TFDS layout of a dataset, written from its original files.

:func:`ensure_prepared` either finds the prepared TFDS dataset (array_record format), or builds
the layout (``dataset_info.json``, ``features.json``, array_record shards) from the original
files in a local directory (see :mod:`snip_jax.data.sources`), or fails at once with a message
naming the three ways to provide the data. Nothing here ever starts a download.

Nothing unverified is ever marked prepared. The original files' arrays are checked against the
dataset's :class:`~snip_jax.data.specs.DatasetSpec` (image shape, label range, matching counts,
no empty split) before anything is written, and so are the files themselves where the spec
knows the originals' digests (:mod:`snip_jax.data.originals`: refused if not the originals in a
default source directory, a warning elsewhere); the layout is written into a temporary folder
beside its final place, each example checked, each shard read back and counted, everything
``fsync``-ed, and only then renamed into place in one step. TFDS considers a folder prepared
once it holds ``dataset_info.json`` and ``features.json`` (:func:`is_prepared` also wants every
shard they name), which only that rename makes appear. Temporary folders left by an
interrupted preparation (ours, or an interrupted ``tfds build``'s) are removed by the next
preparation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from snip_jax import files
from snip_jax.data import originals
from snip_jax.data.idx import Digests
from snip_jax.data.sources import SOURCE_FORMATS
from snip_jax.data.specs import (
  DataNotFoundError,
  DatasetSpec,
  default_data_dir,
  get_spec,
  shape_text,
)

try:
  import fcntl
except ImportError:  # Windows: no flock; leftovers are then removed only once an hour old.
  fcntl = None

log = logging.getLogger(__name__)

#: Our temporary folder for version folder ``V`` is ``.V.incomplete-XXXXXXXX`` beside it; the
#: writing process holds an flock on ``.V.incomplete-XXXXXXXX.lock`` for as long as it writes.
_INCOMPLETE = ".incomplete-"
_LOCK_SUFFIX = ".lock"
#: TFDS's own temporary folders (``tfds build``) are ``incomplete.XXXXXX_V`` beside ``V``.
_TFDS_INCOMPLETE = "incomplete."
#: Without flock (Windows), a leftover is only removed once untouched for this long.
_UNLOCKED_LEFTOVER_SECONDS = 3600


@contextlib.contextmanager
def quiet_absl():
  """Hides TFDS's absl warnings that are expected here (no dataset_info yet, no OpenCV)."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def tfds_builder(name: str, data_dir: str):
  """The TFDS builder of ``name`` (a TFDS name) in ``data_dir``, array_record format.

  Args:
    name: the dataset's TFDS name (:attr:`DatasetSpec.tfds_name`).
    data_dir: TFDS data directory.

  Returns:
    A ``tfds.core.DatasetBuilder``; building it reads no data and starts no download.
  """
  # Imported lazily: importing TFDS is slow, and only preparing or reading a split needs it.
  import tensorflow_datasets as tfds

  with quiet_absl():
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")


def is_prepared(name: str, data_dir: str) -> bool:
  """Whether ``data_dir`` holds ``name`` prepared in the array_record format.

  As for TFDS, the dataset's version folder must hold ``dataset_info.json`` and
  ``features.json``; every shard they name must exist too (a folder copied only in part is not
  prepared).

  Raises:
    DataNotFoundError: the dataset was prepared in another file format.
  """
  builder = tfds_builder(get_spec(name).tfds_name, data_dir)
  with quiet_absl():  # TFDS warns that an unprepared folder has no dataset_info.json.
    if not builder.is_prepared():
      return False
  if builder.info.file_format.value != "array_record":
    raise DataNotFoundError(
      f"{name} in {data_dir} was prepared as {builder.info.file_format.value}, but snip-jax "
      "reads array_record without TensorFlow. Rebuild it (with TensorFlow installed, which "
      f"TFDS needs to build) with `tfds build {name} --file_format=array_record "
      f"--data_dir={data_dir}`, or delete {builder.data_dir} so snip-jax can prepare it from the "
      "local original files."
    )
  for split_info in builder.info.splits.values():
    for path in split_info.filepaths:
      if not os.path.isfile(os.fspath(path)):
        log.warning("%s is not a prepared dataset: shard %s is missing.", builder.data_dir, path)
        return False
  return True


def _image_shape(image: Any) -> tuple[int, ...] | None:
  """``(height, width, channels)`` of a PIL image or an array; ``None`` for anything else (an
  encoded image or a path, which TFDS decodes itself)."""
  if hasattr(image, "getbands"):  # PIL.Image.Image
    return (image.height, image.width, len(image.getbands()))
  if isinstance(image, np.ndarray):
    return (*image.shape, 1) if image.ndim == 2 else image.shape
  return None


def _check_example(spec: DatasetSpec, name: str, split: str, index: int, example: Mapping) -> None:
  """Raises a ``ValueError`` unless ``example`` fits ``spec`` (image shape, label range)."""
  shape = _image_shape(example.get("image"))
  if shape is not None and tuple(shape) != spec.image_shape:
    raise ValueError(
      f"{name} {split} example {index} is a {shape_text(shape)} image, but {name} images are "
      f"{shape_text(spec.image_shape)}: nothing was prepared. Use the original {name} files."
    )
  label = example.get("label")
  if isinstance(label, int | np.integer) and not 0 <= label < spec.num_classes:
    raise ValueError(
      f"{name} {split} example {index} has label {label}, outside 0..{spec.num_classes - 1}: "
      f"nothing was prepared. Use the original {name} files."
    )


def _write_splits(
  name: str,
  features: Any,
  examples: Mapping[str, Iterable[Mapping[str, Any]]],
  tmp_dir: Path,
  final_dir: Path,
) -> list[Any]:
  """Writes one array_record shard per split into ``tmp_dir``, checking every example and
  reading each shard's record count back.

  Args:
    name: a key of :data:`DATASETS`.
    features: the dataset's TFDS features, which encode and serialize each example.
    examples: as :func:`write_tfds_layout` takes them.
    tmp_dir: where the shards are written.
    final_dir: where ``tmp_dir`` will be moved to, named in the split infos.

  Returns:
    One ``tfds.core.SplitInfo`` per split, in the order of ``examples``.

  Raises:
    ValueError: an example does not fit the dataset's spec, a split is empty, or a shard does
      not read back with as many records as were written.
  """
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  from tensorflow_datasets.core import example_serializer

  spec = get_spec(name)
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  split_infos = []
  for split, split_examples in examples.items():
    template = tfds.core.ShardedFileTemplate(
      data_dir=tmp_dir,
      dataset_name=spec.tfds_name,
      split=split,
      filetype_suffix="array_record",
    )
    path = os.fspath(template.sharded_filepath(shard_index=0, num_shards=1))
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    num_examples = num_bytes = 0
    try:
      for example in split_examples:
        _check_example(spec, name, split, num_examples, example)
        record = serializer.serialize_example(features.encode_example(example))
        num_examples += 1
        num_bytes += len(record)
        writer.write(record)
    finally:
      writer.close()
    if num_examples == 0:
      raise ValueError(f"{name} {split} has no examples: nothing was prepared.")
    reader = array_record_module.ArrayRecordReader(path)
    try:
      num_records = reader.num_records()
    finally:
      reader.close()
    if num_records != num_examples:
      raise ValueError(
        f"{path} reads back {num_records} records of the {num_examples} written (a full disk?): "
        "nothing was prepared. Free space and run again."
      )
    log.info("Wrote %s/%s: %d examples.", name, split, num_examples)
    split_infos.append(
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[num_examples],
        num_bytes=num_bytes,
        filename_template=template.replace(data_dir=final_dir),
      )
    )
  return split_infos


@contextlib.contextmanager
def _if_stale(lock_path: Path, entry: Path) -> Iterator[bool]:
  """Yields whether ``entry`` (whose lock file is ``lock_path``) was left by a preparation
  that no longer runs, holding its lock meanwhile, so that the caller can remove it.

  A preparation holds an flock on its lock file while it writes, and the kernel drops it when
  the process ends, however it ends. An entry without a lock file was left by a crash (or an
  older snip-jax). Without flock (Windows) an entry counts as live until untouched for an hour.
  """
  if fcntl is None:
    try:
      age = time.time() - entry.stat().st_mtime
    except OSError:
      age = float("inf")
    yield age >= _UNLOCKED_LEFTOVER_SECONDS
    return
  try:
    descriptor: int | None = os.open(lock_path, os.O_RDWR)
  except FileNotFoundError:
    descriptor = None
  if descriptor is not None:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      os.close(descriptor)
      descriptor = -1
  if descriptor == -1:
    yield False  # A live process holds it.
    return
  try:
    yield True
  finally:
    # Only now, after the caller removed the entry and its lock file: a process that created
    # this lock file just before we locked it finds it gone once it locks it, and takes another.
    if descriptor is not None:
      os.close(descriptor)


def _remove(entry: Path) -> None:
  if entry.is_dir() and not entry.is_symlink():
    shutil.rmtree(entry, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      entry.unlink()


def _remove_leftovers(final_dir: Path) -> None:
  """Removes what interrupted preparations of ``final_dir`` left beside it.

  That is our temporary folders (``.V.incomplete-*``) and their lock files, unless a live
  process still writes them, and TFDS's (``incomplete.*_V``, from an interrupted ``tfds
  build``; one still running would fail anyway, as our folder takes its place).
  """
  ours = f".{final_dir.name}{_INCOMPLETE}"
  if not final_dir.parent.is_dir():
    return
  for entry in sorted(final_dir.parent.iterdir()):
    name = entry.name
    if name.startswith(ours):
      if name.endswith(_LOCK_SUFFIX):
        folder = entry.with_name(name.removesuffix(_LOCK_SUFFIX))
        if folder.exists():
          continue  # Handled with its folder.
        lock_path = entry
      else:
        folder, lock_path = entry, entry.with_name(name + _LOCK_SUFFIX)
      with _if_stale(lock_path, entry) as stale:
        if stale:
          if folder.exists():
            log.warning("Removing %s, left by an interrupted preparation.", folder)
            _remove(folder)
          _remove(lock_path)  # After its folder: a folder never lacks the lock of a live writer.
    elif name.startswith(_TFDS_INCOMPLETE) and name.endswith(f"_{final_dir.name}"):
      log.warning("Removing %s, left by an interrupted `tfds build`.", entry)
      _remove(entry)


@contextlib.contextmanager
def _temporary_folder(final_dir: Path) -> Iterator[Path]:
  """A new temporary folder beside ``final_dir``, locked (see :func:`_remove_leftovers`) until
  the ``with`` block ends, and removed then unless it was renamed meanwhile."""
  prefix = f".{final_dir.name}{_INCOMPLETE}"
  for _ in range(10):
    descriptor, lock_name = tempfile.mkstemp(
      prefix=prefix, suffix=_LOCK_SUFFIX, dir=final_dir.parent
    )
    if fcntl is None:
      break
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
      # A concurrent cleaner may have taken the lock file for a stale one and removed it before
      # we locked it: then it is no longer ours, and we take another.
      if os.path.samestat(os.stat(lock_name), os.fstat(descriptor)):
        break
    except OSError:
      pass
    os.close(descriptor)
  else:
    raise RuntimeError(f"Cannot create a locked temporary folder in {final_dir.parent}.")
  lock_path = Path(lock_name)
  tmp_dir = lock_path.with_name(lock_path.name.removesuffix(_LOCK_SUFFIX))
  try:
    tmp_dir.mkdir()  # No other folder has this name: mkstemp made the lock file's unique.
  except BaseException:
    lock_path.unlink()
    os.close(descriptor)
    raise
  try:
    yield tmp_dir
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)  # The folder first: then its lock file.
    with contextlib.suppress(FileNotFoundError):
      lock_path.unlink()
    os.close(descriptor)


def write_tfds_layout(
  name: str, data_dir: str, examples: Mapping[str, Iterable[Mapping[str, Any]]]
) -> None:
  """Writes the standard TFDS layout of ``name`` into ``data_dir``, one shard per split.

  The shards and metadata are written to a temporary folder, every example checked against the
  dataset's spec, every shard read back and counted, everything ``fsync``-ed, and the folder
  is then renamed into place in one step: an interrupted or refused preparation never leaves a
  folder that looks prepared. What an earlier interrupted preparation left is removed first.
  Processes that share ``data_dir`` (a multi-process run on one machine) may all prepare it at
  once: the first to finish wins, and the others keep its copy (the same data).

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory.
    examples: ``{tfds split: feature dicts}``, each dict as TFDS's ``encode_example`` of the
      dataset's features takes it (e.g. ``{'image': PIL image, 'label': int}``).

  Raises:
    DataNotFoundError: the dataset's folder exists but is not a prepared dataset; it is named
      and left alone rather than overwritten.
    ValueError: an example's image shape or label does not fit the dataset, or a split is
      empty (nothing is prepared).
  """
  import tensorflow_datasets as tfds

  spec = get_spec(name)
  builder = tfds_builder(spec.tfds_name, data_dir)
  final_dir = Path(builder.data_dir)
  if final_dir.exists() and any(final_dir.iterdir()):
    if is_prepared(name, data_dir):
      return  # Another process prepared it meanwhile.
    raise DataNotFoundError(
      f"{final_dir} exists but holds no prepared dataset (left by an interrupted build?). "
      "Remove it and run again; snip-jax will prepare it from the original files."
    )
  final_dir.parent.mkdir(parents=True, exist_ok=True)
  _remove_leftovers(final_dir)
  with _temporary_folder(final_dir) as tmp_dir:
    features = builder.info.features
    if spec.label_names:
      features["label"].names = list(spec.label_names)
    split_infos = _write_splits(name, features, examples, tmp_dir, final_dir)
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.info.write_to_directory(tmp_dir)
    for path in tmp_dir.iterdir():
      files.fsync(path)
    files.fsync(tmp_dir)
    try:
      os.replace(tmp_dir, final_dir)
    except OSError:
      if not is_prepared(name, data_dir):
        raise
      # Another process prepared it meanwhile (its directory is in the way): keep that one.
    files.fsync(final_dir.parent)


def _feature_dicts(
  split: str, images: np.ndarray, labels: np.ndarray, with_ids: bool
) -> Iterator[dict[str, Any]]:
  """TFDS feature dicts of one split; ids as TFDS's CIFAR builder makes them (``train_00042``)."""
  from PIL import Image

  for i, (image, label) in enumerate(zip(images, labels, strict=True)):
    # PIL encodes the PNG (TFDS would use TensorFlow for a numpy array): mode L or RGB.
    example: dict[str, Any] = {"image": Image.fromarray(image), "label": int(label)}
    if with_ids:
      example["id"] = f"{split}_{i:05d}"
    yield example


def _source_files(found: Any, split: str) -> tuple[str, str]:
  """``(images file, labels file)`` of ``split`` for messages: the IDX files :func:`find` gave,
  or the one archive or folder (CIFAR-10) that holds both."""
  if isinstance(found, Mapping):
    images_file, labels_file = found[split]
    return os.fspath(images_file), os.fspath(labels_file)
  return os.fspath(found), os.fspath(found)


def check_source_arrays(
  name: str, found: Any, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> None:
  """Checks the arrays read from ``name``'s original files against its spec.

  Args:
    name: a key of :data:`DATASETS`.
    found: where the arrays were read from, as the source format's ``find`` gave it (named in
      the messages).
    arrays: ``{tfds split: (images [N, H, W] or [N, H, W, C] uint8, labels [N])}``.

  Raises:
    ValueError: one line naming the file, for images of another shape than the spec's, an
      empty split, unequal image and label counts, or a label outside ``[0, num_classes)``.
  """
  spec = get_spec(name)
  for split, (images, labels) in arrays.items():
    images_file, labels_file = _source_files(found, split)
    shape = (*images.shape[1:], 1) if images.ndim == 3 else images.shape[1:]
    if tuple(shape) != spec.image_shape:
      raise ValueError(
        f"{images_file!r} holds images of shape {shape_text(shape)}, but {name} images are "
        f"{shape_text(spec.image_shape)}: these are not the original {name} files. Point "
        f"--config.source_dir at them (nothing was prepared)."
      )
    if len(images) == 0:
      raise ValueError(f"{images_file!r} holds 0 {split} examples. Re-download or reinstall it.")
    if len(labels) != len(images):
      raise ValueError(
        f"{labels_file!r} holds {len(labels)} {split} labels but {images_file!r} holds "
        f"{len(images)} images. Re-download or reinstall them."
      )
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= spec.num_classes:
      raise ValueError(
        f"{labels_file!r} has label {low if low < 0 else high}, outside "
        f"0..{spec.num_classes - 1} of {name}. Re-download or reinstall it."
      )


def _check_prepared_counts(name: str, data_dir: str, counts: Mapping[str, int]) -> None:
  """Raises a ``ValueError`` unless each split prepared in ``data_dir`` holds ``counts[split]``
  examples (the original files' counts)."""
  builder = tfds_builder(get_spec(name).tfds_name, data_dir)
  for split, count in counts.items():
    actual = builder.info.splits[split].num_examples if split in builder.info.splits else 0
    if actual != count:
      raise ValueError(
        f"{builder.data_dir} holds {actual:,} {split} examples, not the {count:,} of the "
        f"original {get_spec(name).display_name} files it was prepared from. Delete it and run "
        "again."
      )


def prepare_from_source(name: str, source_dir: str, data_dir: str) -> None:
  """Prepares ``name`` in ``data_dir`` from its original files in ``source_dir``.

  The arrays read are checked (:func:`check_source_arrays`) before anything is written to
  ``data_dir``. Where the dataset's spec lists its original files' digests, each file is
  compared with its original as it is read (:mod:`snip_jax.data.originals`): in one of the
  spec's default source directories a file that is not the original is refused (its size before
  it is read); in any other ``source_dir`` it draws a logged warning. When every file is the
  original, the prepared splits must hold the original example counts.

  Args:
    name: a key of :data:`DATASETS`.
    source_dir: a directory with the original files (IDX files for the MNIST family; a CIFAR-10
      archive or extracted folder for ``cifar10``).
    data_dir: TFDS data directory.

  Raises:
    DataNotFoundError: ``source_dir`` does not hold the files, or some are missing.
    ValueError: a file is truncated, corrupt, or not this dataset's (the message names it and
      the fix).
  """
  spec = get_spec(name)
  source = SOURCE_FORMATS[spec.source_format]
  found = source.find(source_dir)
  if found is None:
    raise DataNotFoundError(f"{source_dir!r} does not hold {source.files}.")
  strict = originals.in_default_dir(spec, source_dir)
  if strict:
    originals.check_sizes(spec, found, source_dir)
  log.info("Preparing %s from %s.", name, found)
  digests: Digests = {}
  arrays = source.read(found, spec.num_classes, digests)
  check_source_arrays(name, found, arrays)
  counts = originals.check_digests(spec, found, digests, source_dir, strict)
  with_ids = "id" in tfds_builder(spec.tfds_name, data_dir).info.features
  write_tfds_layout(
    name,
    data_dir,
    {
      split: _feature_dicts(split, images, labels, with_ids)
      for split, (images, labels) in arrays.items()
    },
  )
  if counts:  # What was prepared (or what another process prepared meanwhile).
    _check_prepared_counts(name, data_dir, counts)


def ensure_prepared(name: str, data_dir: str | None = None, source_dir: str | None = None) -> str:
  """Makes sure ``name`` can be read from ``data_dir`` without a network; returns ``data_dir``.

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory (default: :func:`default_data_dir`).
    source_dir: a directory with the dataset's original files to prepare from; when ``None``
      the dataset's default directories are searched.

  Raises:
    DataNotFoundError: at once (no download is tried), naming the three ways to provide data.
    ValueError: an original file was found but is truncated or corrupt, or (in a default
      directory) is not the original (see :func:`prepare_from_source`).
  """
  spec = get_spec(name)
  source = SOURCE_FORMATS[spec.source_format]
  data_dir = data_dir or default_data_dir()
  if is_prepared(name, data_dir):
    return data_dir
  candidates = (
    [source_dir] if source_dir else [os.path.expanduser(d) for d in spec.default_source_dirs]
  )
  for directory in candidates:
    if source.find(directory) is not None:
      prepare_from_source(name, directory, data_dir)
      return data_dir
  searched = ", ".join(repr(d) for d in candidates)
  raise DataNotFoundError(
    f"Dataset {name!r} is not prepared in {data_dir!r} and its original files were not found "
    f"in {searched}. Provide it in one of three ways:\n"
    f"  1. {spec.install_hint};\n"
    f"  2. point --config.source_dir at a directory holding {source.files};\n"
    f"  3. on a machine with network access and TensorFlow (`pip install tensorflow`: TFDS "
    f"needs it to download and build, snip-jax never does): `tfds build {spec.tfds_name} "
    f"--file_format=array_record --data_dir={data_dir}` (or set --config.data_dir / "
    f"TFDS_DATA_DIR to where it was built)."
  )
