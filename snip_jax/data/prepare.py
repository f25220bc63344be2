"""Offline preparation: the standard TFDS layout of a dataset, written from its original files.

:func:`ensure_prepared` either finds the prepared TFDS dataset (array_record format), or builds
the layout (``dataset_info.json``, ``features.json``, array_record shards) from the original
files in a local directory (see :mod:`snip_jax.data.sources`), or fails at once with a message
naming the three ways to provide the data. Nothing here ever starts a download.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from snip_jax.data.sources import SOURCE_FORMATS
from snip_jax.data.specs import DataNotFoundError, default_data_dir, get_spec

log = logging.getLogger(__name__)


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
  """Whether ``data_dir`` holds ``name`` prepared in the array_record format."""
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
  return True


def _write_splits(
  name: str,
  features: Any,
  examples: Mapping[str, Iterable[Mapping[str, Any]]],
  tmp_dir: Path,
  final_dir: Path,
) -> list[Any]:
  """Writes one array_record shard per split into ``tmp_dir``.

  Args:
    name: a key of :data:`DATASETS`.
    features: the dataset's TFDS features, which encode and serialize each example.
    examples: as :func:`write_tfds_layout` takes them.
    tmp_dir: where the shards are written.
    final_dir: where ``tmp_dir`` will be moved to, named in the split infos.

  Returns:
    One ``tfds.core.SplitInfo`` per split, in the order of ``examples``.
  """
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module
  from tensorflow_datasets.core import example_serializer

  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  split_infos = []
  for split, split_examples in examples.items():
    template = tfds.core.ShardedFileTemplate(
      data_dir=tmp_dir,
      dataset_name=get_spec(name).tfds_name,
      split=split,
      filetype_suffix="array_record",
    )
    writer = array_record_module.ArrayRecordWriter(
      os.fspath(template.sharded_filepath(shard_index=0, num_shards=1)), "group_size:1"
    )
    num_examples = num_bytes = 0
    for example in split_examples:
      record = serializer.serialize_example(features.encode_example(example))
      num_examples += 1
      num_bytes += len(record)
      writer.write(record)
    writer.close()
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


def write_tfds_layout(
  name: str, data_dir: str, examples: Mapping[str, Iterable[Mapping[str, Any]]]
) -> None:
  """Writes the standard TFDS layout of ``name`` into ``data_dir``, one shard per split.

  The shards and metadata are written to a temporary directory and moved into place at the end,
  so an interrupted preparation leaves nothing half-written behind. Processes that share
  ``data_dir`` (a multi-process run on one machine) may all prepare it at once: the first to
  finish wins, and the others keep its copy (the same data).

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory.
    examples: ``{tfds split: feature dicts}``, each dict as TFDS's ``encode_example`` of the
      dataset's features takes it (e.g. ``{'image': PIL image, 'label': int}``).

  Raises:
    DataNotFoundError: the dataset's folder exists but is not a prepared dataset; it is named
      and left alone rather than overwritten.
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
  tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.incomplete-", dir=final_dir.parent))
  try:
    features = builder.info.features
    if spec.label_names:
      features["label"].names = list(spec.label_names)
    split_infos = _write_splits(name, features, examples, tmp_dir, final_dir)
    builder.info.set_splits(tfds.core.SplitDict(split_infos))
    builder.info.write_to_directory(tmp_dir)
    try:
      os.replace(tmp_dir, final_dir)
    except OSError:
      if not is_prepared(name, data_dir):
        raise
      # Another process prepared it meanwhile (its directory is in the way): keep that one.
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)


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


def prepare_from_source(name: str, source_dir: str, data_dir: str) -> None:
  """Prepares ``name`` in ``data_dir`` from its original files in ``source_dir``.

  Args:
    name: a key of :data:`DATASETS`.
    source_dir: a directory with the original files (IDX files for the MNIST family; a CIFAR-10
      archive or extracted folder for ``cifar10``).
    data_dir: TFDS data directory.

  Raises:
    DataNotFoundError: ``source_dir`` does not hold the files, or some are missing.
    ValueError: a file is truncated or corrupt (the message names it and the fix).
  """
  spec = get_spec(name)
  source = SOURCE_FORMATS[spec.source_format]
  found = source.find(source_dir)
  if found is None:
    raise DataNotFoundError(f"{source_dir!r} does not hold {source.files}.")
  log.info("Preparing %s from %s.", name, found)
  arrays = source.read(found, spec.num_classes)
  with_ids = "id" in tfds_builder(spec.tfds_name, data_dir).info.features
  write_tfds_layout(
    name,
    data_dir,
    {
      split: _feature_dicts(split, images, labels, with_ids)
      for split, (images, labels) in arrays.items()
    },
  )


def ensure_prepared(name: str, data_dir: str | None = None, source_dir: str | None = None) -> str:
  """Makes sure ``name`` can be read from ``data_dir`` without a network; returns ``data_dir``.

  Args:
    name: a key of :data:`DATASETS`.
    data_dir: TFDS data directory (default: :func:`default_data_dir`).
    source_dir: a directory with the dataset's original files to prepare from; when ``None``
      the dataset's default directories are searched.

  Raises:
    DataNotFoundError: at once (no download is tried), naming the three ways to provide data.
    ValueError: an original file was found but is truncated or corrupt.
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
