"""The original files of MNIST and Fashion-MNIST: IDX arrays of unsigned bytes, checked.

A file is read as a stream (``.gz`` or plain) and trusted only as far as its header allows:
the declared size is checked against :data:`MAX_IDX_BYTES` before anything else is read, and
reading stops at the first byte past the declared size. A corrupt header or a gzip bomb (a
small ``.gz`` that inflates to gigabytes) is refused after at most that many bytes, never read
whole into memory. The size and SHA-256 of the uncompressed bytes can be taken in the same read
(``digests``), so that :mod:`snip_jax.data.originals` can tell the original files from others
without reading anything twice.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from typing import NamedTuple

import numpy as np

_IDX_DTYPES = {0x08: np.uint8}
_IDX_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: What a source directory of IDX files must hold, for error messages.
IDX_FILES = (
  "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
  "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
)
#: The most bytes of data one IDX file may declare: 100,000 examples of 28x28x3 bytes (224 MiB).
#: The largest original file, MNIST's or Fashion-MNIST's training images, is 60,000 x 28 x 28
#: bytes (45 MiB); a header declaring more is corrupt, and is refused before anything is read.
MAX_IDX_BYTES = 100_000 * 28 * 28 * 3
_CHUNK_BYTES = 1 << 20
_FIX = "Re-download or reinstall it."


class FileDigest(NamedTuple):
  """A file's uncompressed bytes: how many, and their SHA-256 in hex."""

  size: int
  sha256: str


#: ``{path: FileDigest}``, filled by the readers below when given.
Digests = dict[str, FileDigest]


def _read_exactly(f, size: int) -> bytearray:
  """Up to ``size`` bytes of ``f``, fewer only at its end; memory grows with what arrives."""
  data = bytearray()
  while len(data) < size:
    chunk = f.read(min(_CHUNK_BYTES, size - len(data)))
    if not chunk:
      break
    data += chunk
  return data


def _skip(f, size: int) -> None:
  """Reads and drops up to ``size`` bytes of ``f`` in chunks: surfaces a gzip stream's error."""
  while size > 0 and (chunk := f.read(min(_CHUNK_BYTES, size))):
    size -= len(chunk)


def read_idx(
  path: str | os.PathLike[str], max_bytes: int = MAX_IDX_BYTES, digests: Digests | None = None
) -> np.ndarray:
  """Reads an IDX file (``.gz`` or plain) of unsigned bytes into an array.

  The file is read as a stream: its header's declared size must be at most ``max_bytes``, and
  the data must end exactly where the header says. Neither a corrupt header nor a file that
  inflates past its header is ever read (or decompressed) whole.

  Args:
    path: the file; gzip-compressed if its name ends in ``.gz``.
    max_bytes: the most data bytes the header may declare (default :data:`MAX_IDX_BYTES`).
    digests: if given, ``digests[path]`` is set to the :class:`FileDigest` of the file's
      uncompressed bytes (header and data: the whole file, as the read succeeded).

  Returns:
    The array, of the shape the header declares.

  Raises:
    ValueError: on a wrong magic number, an unsupported element type, a header declaring more
      than ``max_bytes``, or data shorter or longer than the header declares.
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      magic = bytes(_read_exactly(f, 4))
      if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        if opener is gzip.open:  # A cut-off .gz is reported as such (its start may be anything).
          _skip(f, max_bytes)
        raise ValueError(
          f"{path!r} is not an IDX file of unsigned bytes (magic number "
          f"{magic.hex() or 'missing'}; expected 0000080N). {_FIX}"
        )
      ndim = magic[3]
      dims = bytes(_read_exactly(f, 4 * ndim))
      if len(dims) < 4 * ndim:
        raise ValueError(f"IDX file {path!r} is truncated inside its header. {_FIX}")
      shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
      declared = math.prod(shape)  # Python integers: no overflow, however large the dims.
      if declared > max_bytes:
        raise ValueError(
          f"IDX file {path!r} declares shape {shape} ({declared} bytes), more than the "
          f"{max_bytes} bytes an IDX file may hold: its header is corrupt. {_FIX}"
        )
      payload = _read_exactly(f, declared)
      if len(payload) < declared:
        raise ValueError(
          f"IDX file {path!r} holds {len(payload)} data bytes but its header {shape} needs "
          f"{declared}: the file is truncated or corrupt. {_FIX}"
        )
      if f.read(1):  # One byte more than declared is enough to refuse: the rest is not read.
        raise ValueError(
          f"IDX file {path!r} holds more than the {declared} data bytes its header {shape} "
          f"declares: the file is corrupt. {_FIX}"
        )
  except (OSError, EOFError, zlib.error) as e:  # gzip: truncated or non-gzip input.
    raise ValueError(f"Cannot read IDX file {path!r}: {e}. {_FIX}") from e
  if digests is not None:  # The bytes read, in memory: hashed without reading the file again.
    sha256 = hashlib.sha256(magic)
    sha256.update(dims)
    sha256.update(payload)
    digests[path] = FileDigest(len(magic) + len(dims) + len(payload), sha256.hexdigest())
  return np.frombuffer(payload, _IDX_DTYPES[magic[2]]).reshape(shape)


def uncompressed_size(path: str | os.PathLike[str]) -> int:
  """The size of a file's uncompressed bytes, read without decompressing: a plain file's size,
  or a ``.gz`` file's size field (its last 4 bytes: the size modulo 2**32 of its last member,
  which is the whole file's for the single-member files gzip writes; a cut-off ``.gz`` gives a
  wrong size)."""
  path = os.fspath(path)
  if not path.endswith(".gz"):
    return os.path.getsize(path)
  with open(path, "rb") as f:
    if f.seek(0, os.SEEK_END) < 18:  # A gzip header and trailer take 18 bytes.
      return 0
    f.seek(-4, os.SEEK_END)
    return int.from_bytes(f.read(4), "little")


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
  images_path: str, labels_path: str, num_classes: int, digests: Digests | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Images ``[N, H, W]`` uint8 and labels ``[N]``, checked against each other; each file's
  :class:`FileDigest` into ``digests`` if given (see :func:`read_idx`).

  Raises:
    ValueError: a file cannot be read (see :func:`read_idx`), the images are not ``[N, H, W]``
      or the labels not ``[N]``, there are no examples, the counts differ, or a label is
      outside ``[0, num_classes)``. The message names the file.
  """
  images = read_idx(images_path, digests=digests)
  if images.ndim != 3:
    raise ValueError(
      f"IDX file {images_path!r} holds an array of shape {images.shape}, not images "
      f"[N, height, width]. {_FIX}"
    )
  if len(images) == 0:
    raise ValueError(f"IDX file {images_path!r} holds 0 examples. {_FIX}")
  labels = read_idx(labels_path, digests=digests)
  if labels.ndim != 1:
    raise ValueError(
      f"IDX file {labels_path!r} holds an array of shape {labels.shape}, not labels [N]. {_FIX}"
    )
  if len(images) != len(labels):
    raise ValueError(
      f"IDX file {labels_path!r} holds {len(labels)} labels but {images_path!r} holds "
      f"{len(images)} images: they are not one dataset. {_FIX}"
    )
  if labels.max() >= num_classes:
    raise ValueError(
      f"IDX file {labels_path!r} has label {labels.max()}, outside 0..{num_classes - 1}. {_FIX}"
    )
  return images, labels


def read_idx_files(
  files: dict[str, tuple[str, str]], num_classes: int, digests: Digests | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{split: (images [N, H, W] uint8, labels [N])}`` from :func:`find_idx_files`'s answer;
  each file's :class:`FileDigest` into ``digests`` if given (see :func:`read_idx`)."""
  return {
    split: read_idx_split(images_path, labels_path, num_classes, digests)
    for split, (images_path, labels_path) in files.items()
  }
