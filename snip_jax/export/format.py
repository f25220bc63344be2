"""The snip-jax-sparse file format's constants, its error and what reading it gives back.

The format itself is specified in :mod:`snip_jax.export`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from snip_jax import trees

PyTree = Any


FORMAT = "snip-jax-sparse"
VERSION = 1
MANIFEST = "__manifest__"
#: The collections of a model's variables an export holds.
COLLECTIONS = ("params", "batch_stats")
FIX = "Export it again (python experiments/export.py --workdir DIR, or export.export_sparse)."


class ExportError(ValueError):
  """A file is not a readable snip-jax sparse export, or it does not fit the model."""


@dataclasses.dataclass(frozen=True)
class Exported:
  """What an export holds, read back by :func:`load_dense` or :func:`load_sparse`.

  Attributes:
    params: the params tree (nested dicts, as Flax makes them): dense arrays equal bit for bit
      to the masked params that were exported, or with ``BCOO`` leaves (:func:`load_sparse`).
    batch_stats: the ``batch_stats`` collection (``{}`` for a model without batch norm).
    config: the config stored with the export (``None`` if none was given).
    step: the training step of the exported params (``None`` if not given).
  """

  params: PyTree
  batch_stats: PyTree
  config: dict[str, Any] | None
  step: int | None

  @property
  def variables(self) -> dict[str, PyTree]:
    """``{'params': ..., 'batch_stats': ...}`` (without an empty ``batch_stats``) for ``apply``."""
    return trees.variables(self.params, self.batch_stats)


# --------------------------------------------------------------------------------------------
# Writing.


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """The ``[rows, cols]`` view of a leaf that its CSR form describes."""
  cols = shape[-1] if shape else 1
  size = int(np.prod(shape, dtype=np.int64))
  return (size // cols if cols else 0), cols
