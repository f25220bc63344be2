"""The original CIFAR-10 files (https://www.cs.toronto.edu/~kriz/cifar.html), read safely.

Both versions are read, python (pickled batches) and binary (fixed-size records), from the
downloaded archive (in memory, nothing extracted) or the extracted folder. The pickles go
through an unpickler that allows only numpy's array reconstruction: a crafted file cannot run
code.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import posixpath
import tarfile
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from snip_jax.data.specs import DataNotFoundError

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
#: The most bytes a batch file may hold: a batch of 10,000 images is 30.7 MB in either version
#: (the python one adds its labels and file names); a larger one is refused before it is read.
MAX_BATCH_BYTES = 40_000_000
_CIFAR10_FIX = (
  "Download cifar-10-python.tar.gz or cifar-10-binary.tar.gz again from "
  "https://www.cs.toronto.edu/~kriz/cifar.html."
)
#: What a source directory of CIFAR-10 must hold, for error messages.
CIFAR10_FILES = (
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
  raise DataNotFoundError(f"{origin} holds no CIFAR-10 batches; expected {CIFAR10_FILES}.")


def _check_size(size: int, origin: str) -> None:
  if size > MAX_BATCH_BYTES:
    raise ValueError(
      f"{origin} holds {size:,} bytes, more than the {MAX_BATCH_BYTES:,} a CIFAR-10 batch may: "
      f"it is not a CIFAR-10 batch file. {_CIFAR10_FIX}"
    )


def _read_cifar10_archive(archive: str) -> dict[str, bytes]:
  """The batch files of a CIFAR-10 tar archive, read in memory: ``{file name: contents}``."""
  wanted = set(_cifar10_batch_names(False) + _cifar10_batch_names(True))
  members: dict[str, bytes] = {}
  try:
    with tarfile.open(archive, "r:*") as tar:
      for member in tar:
        name = posixpath.basename(member.name)
        if member.isfile() and name in wanted and name not in members:
          _check_size(member.size, f"{name} in {archive!r}")
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
      file = os.path.join(path, name)
      _check_size(os.path.getsize(file), repr(file))
      return Path(file).read_bytes(), repr(file)

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
