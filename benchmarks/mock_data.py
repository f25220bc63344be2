"""Mock CIFAR-10: tiny archives of random images in both original formats, as downloaded.

The benchmarks' training section prepares one with :mod:`snip_jax.data` (no CIFAR-10 is needed
offline), and the tests read them back; the pickles are written the way Python 2's cPickle wrote
the originals, so the reader meets what it meets in the real files.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


class _Python2Pickler(pickle._Pickler):
  """Pickles ``bytes`` as Python 2 ``str`` (protocol 2 BINSTRING), as the CIFAR files were.

  Python 3 would write them as calls to ``_codecs.encode``, a global the originals never use.
  """

  dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

  def save_python2_str(self, obj: bytes) -> None:
    if len(obj) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
    self.memoize(obj)

  dispatch[bytes] = save_python2_str


def python2_pickle(obj) -> bytes:
  """``obj`` pickled the way Python 2's cPickle with numpy 1 wrote the CIFAR-10 batches."""
  buffer = io.BytesIO()
  _Python2Pickler(buffer, protocol=2).dump(obj)
  # Numpy 2 names its module numpy._core; the originals say numpy.core.
  return buffer.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def cifar10_batch_bytes(images_NxHxWxC: np.ndarray, labels, name: str, binary: bool) -> bytes:
  """One CIFAR-10 batch file's contents, python (pickled dict) or binary version."""
  rows_Nx3072 = images_NxHxWxC.transpose(0, 3, 1, 2).reshape(len(labels), -1)  # CHW rows.
  if binary:
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], rows_Nx3072], axis=1)
    return records.astype(np.uint8).tobytes()
  return python2_pickle(
    {
      b"batch_label": f"{name} of the tiny test set".encode(),
      b"labels": [int(label) for label in labels],
      b"data": np.ascontiguousarray(rows_Nx3072, np.uint8),
      b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
    }
  )


def write_cifar10(
  directory: Path,
  binary: bool = False,
  archive: bool = True,
  per_batch: int = 4,
  num_test: int = 6,
  skip: tuple[str, ...] = (),
  seed: int = 0,
):
  """Writes a tiny CIFAR-10 in an original format; returns ``{'train': ..., 'test': ...}``.

  Args:
    directory: where to write (a ``pathlib.Path``).
    binary: the binary version (``*.bin`` records) instead of the python one (pickles).
    archive: write ``cifar-10-python.tar.gz`` / ``cifar-10-binary.tar.gz`` as downloaded;
      otherwise the folder it extracts to, ``cifar-10-batches-py/`` / ``cifar-10-batches-bin/``.
    per_batch: images in each of the five training batches.
    num_test: images in the test batch.
    skip: batch names (without ``.bin``) to leave out.
    seed: for the random pixels and labels.

  Returns:
    The arrays written, ``(images [N, 32, 32, 3] uint8, labels [N] int64)`` per split, train
    being the five batches in order. Skipped batches are still part of them.
  """
  rng = np.random.default_rng(seed)
  suffix, folder = (".bin", "cifar-10-batches-bin") if binary else ("", "cifar-10-batches-py")
  files, arrays = {}, {"train": [], "test": []}
  for name in (*CIFAR10_TRAIN_BATCHES, "test_batch"):
    n = num_test if name == "test_batch" else per_batch
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    arrays["test" if name == "test_batch" else "train"].append((images, labels))
    if name not in skip:
      files[name + suffix] = cifar10_batch_bytes(images, labels, name, binary)
  # The archives also hold metadata and a readme, which the reader must skip.
  if binary:
    files["batches.meta.txt"] = b"airplane\nautomobile\n"
  else:
    files["batches.meta"] = python2_pickle({b"label_names": [b"airplane", b"automobile"]})
  files["readme.html"] = b"<html></html>"
  if archive:
    name = "cifar-10-binary.tar.gz" if binary else "cifar-10-python.tar.gz"
    with tarfile.open(directory / name, "w:gz") as tar:
      for file_name, contents in files.items():
        info = tarfile.TarInfo(f"{folder}/{file_name}")
        info.size = len(contents)
        tar.addfile(info, io.BytesIO(contents))
  else:
    (directory / folder).mkdir(parents=True, exist_ok=True)
    for file_name, contents in files.items():
      (directory / folder / file_name).write_bytes(contents)
  return {
    split: (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    for split, parts in arrays.items()
  }
