"""Source formats: how each dataset's original files are found in a directory and read.

A :class:`~snip_jax.data.specs.DatasetSpec` names its format by a key of
:data:`SOURCE_FORMATS`; the readers themselves live in :mod:`snip_jax.data.idx` and
:mod:`snip_jax.data.cifar10`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from snip_jax.data.cifar10 import CIFAR10_FILES, find_cifar10_source, read_cifar10
from snip_jax.data.idx import IDX_FILES, Digests, find_idx_files, read_idx_files


@dataclasses.dataclass(frozen=True)
class SourceFormat:
  """How a dataset's original files are found in a directory and read into arrays."""

  #: directory -> what ``read`` takes (a path, or a dict of paths), or ``None`` if absent.
  find: Callable[[str], Any]
  #: (what ``find`` returned, num_classes, digests) -> ``{tfds split: (images uint8, labels)}``;
  #: a format whose datasets have known originals (IDX) puts each file's
  #: :class:`~snip_jax.data.idx.FileDigest` into ``digests`` as it reads it.
  read: Callable[[Any, int, Digests], dict[str, tuple[np.ndarray, np.ndarray]]]
  #: What a source directory must hold, for error messages.
  files: str


SOURCE_FORMATS = {
  "idx": SourceFormat(find_idx_files, read_idx_files, IDX_FILES),
  "cifar10": SourceFormat(
    find_cifar10_source, lambda path, num_classes, digests: read_cifar10(path), CIFAR10_FILES
  ),
}
