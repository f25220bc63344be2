"""The original files of MNIST and Fashion-MNIST: IDX arrays of unsigned bytes, checked."""

from __future__ import annotations

import gzip
import os

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


def read_idx_files(
  files: dict[str, tuple[str, str]], num_classes: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{split: (images [N, H, W] uint8, labels [N])}`` from :func:`find_idx_files`'s answer."""
  return {
    split: read_idx_split(images_path, labels_path, num_classes)
    for split, (images_path, labels_path) in files.items()
  }
