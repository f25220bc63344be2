"""Writing a pruned model as a snip-jax-sparse file: only its kept weights, as CSR."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

import snip_jax
from snip_jax import files, masks
from snip_jax.export.format import FORMAT, MANIFEST, VERSION, matrix_shape

PyTree = Any


def _uint_for(largest: int) -> np.dtype:
  """The smallest unsigned integer dtype that holds ``largest``."""
  for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
    if largest <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f"{largest} is too large to index.")


def _storable(values: np.ndarray) -> np.ndarray:
  """``values`` as NumPy stores them: the raw bits for dtypes outside NumPy (``bfloat16``)."""
  if values.dtype.kind in "biufc":
    return values
  return values.view(np.dtype(f"uint{8 * values.dtype.itemsize}"))


def _store(arrays: dict[str, np.ndarray], key: str, value: np.ndarray) -> None:
  """``arrays[key] = value``, refusing a key already stored: a leaf whose name (a key that
  contains ``/``) is another's, or one of its CSR parts (``<name>/indptr``), would overwrite it."""
  if key in arrays:
    raise ValueError(
      f"Two leaves of the model would both be stored as {key!r} (a key containing '/'?): "
      "rename the key."
    )
  arrays[key] = value


def _dense_leaf(arrays: dict[str, np.ndarray], collection: str, path: str, value) -> dict:
  """Stores ``value`` whole; returns its manifest entry."""
  _store(arrays, f"{collection}/{path}", _storable(value))
  entry = {"collection": collection, "path": path, "shape": list(value.shape)}
  return {**entry, "dtype": value.dtype.name, "layout": "dense", "nnz": int(value.size)}


def _csr_leaf(arrays: dict[str, np.ndarray], path: str, value, kept) -> dict:
  """Stores the entries of ``value`` at the flat positions ``kept`` (ascending) as CSR."""
  rows, cols = matrix_shape(value.shape)
  row_of, col_of = np.divmod(kept, max(cols, 1))
  indptr = np.searchsorted(row_of, np.arange(rows + 1))  # Where each row's entries start.
  name = f"params/{path}"
  _store(arrays, f"{name}/indptr", indptr.astype(_uint_for(kept.size)))
  _store(arrays, f"{name}/indices", col_of.astype(_uint_for(max(cols - 1, 0))))
  _store(arrays, f"{name}/values", _storable(value.reshape(-1)[kept]))
  entry = {"collection": "params", "path": path, "shape": list(value.shape)}
  return {**entry, "dtype": value.dtype.name, "layout": "csr", "nnz": int(kept.size)}


def export_sparse(
  path: str | os.PathLike[str],
  params: PyTree,
  mask: PyTree | None = None,
  *,
  batch_stats: PyTree | None = None,
  config: ml_collections.ConfigDict | dict[str, Any] | None = None,
  step: int | None = None,
  filter_fn: masks.FilterFn = masks.kernels,
) -> dict[str, int]:
  """Writes ``params`` (masked by ``mask``) to ``path`` keeping only the kept prunable weights.

  The write is atomic (a temporary file renamed into place), so ``path`` is either the old file
  or the complete new one.

  Args:
    path: the ``.npz`` file to write (format in the module docstring).
    params: the model's params (a tree of nested dicts, as Flax makes them).
    mask: the mask (see :mod:`snip_jax.masks`); the prunable leaves keep exactly its ``True``
      entries and the leaves stored whole are masked too, so the file holds
      ``apply_mask(params, mask)``. ``None``: keep every entry
      that is not ``+0.0`` (the params are already masked).
    batch_stats: the model's ``batch_stats`` collection, stored dense (``None``: none).
    config: the run's config, stored so that :func:`model_from_config` can rebuild the model.
    step: the training step of ``params``, stored for reference.
    filter_fn: which leaves are prunable, i.e. stored sparse (the mask's filter).

  Returns:
    ``{'file_bytes', 'kept', 'prunable'}``: the file's size, and the stored and total entries
    of the prunable leaves.

  Raises:
    ValueError: ``mask`` does not match ``params``, or two leaves would be stored under one
      name (a key that contains ``/``); nothing is written.
  """
  if mask is not None:
    mask = masks.conform_mask(params, mask)
  # Each leaf is stored under its name: leaf_names refuses two of one name before anything is.
  names, stats_names = masks.leaf_names(params), masks.leaf_names(batch_stats or {})
  mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * len(names)
  arrays: dict[str, np.ndarray] = {}
  leaves: list[dict[str, Any]] = []
  kept_total = prunable_total = 0
  for name, (tree_path, leaf), keep in zip(
    names, jax.tree.leaves_with_path(params), mask_leaves, strict=True
  ):
    value = np.asarray(leaf)
    if not filter_fn(tree_path, leaf):
      # Stored whole, as apply_mask(params, mask) has it: the mask may prune leaves that this
      # filter does not store sparse (biases, when pruned with kernels_and_biases).
      if keep is not None and masks.is_candidate(value):
        value = np.where(np.asarray(keep, bool), value, np.zeros((), value.dtype))
      leaves.append(_dense_leaf(arrays, "params", name, value))
      continue
    flat = value.reshape(-1)
    if keep is None:  # Every entry whose bits are not those of +0.0 (-0.0 is kept).
      kept = np.flatnonzero((flat != 0) | np.signbit(flat))
    else:
      kept = np.flatnonzero(np.asarray(keep).reshape(-1))
    leaves.append(_csr_leaf(arrays, name, value, kept))
    kept_total, prunable_total = kept_total + kept.size, prunable_total + flat.size
  for name, leaf in zip(stats_names, jax.tree.leaves(batch_stats or {}), strict=True):
    leaves.append(_dense_leaf(arrays, "batch_stats", name, np.asarray(leaf)))
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  manifest = {
    "format": FORMAT,
    "version": VERSION,
    "leaves": leaves,
    "config": config,
    "step": None if step is None else int(step),
    "snip_jax_version": snip_jax.__version__,
  }
  arrays[MANIFEST] = np.asarray(json.dumps(manifest))
  path = os.fspath(path)
  with files.atomic_writer(path, "wb") as f:
    np.savez_compressed(f, **arrays)
  return {
    "file_bytes": os.path.getsize(path),
    "kept": int(kept_total),
    "prunable": int(prunable_total),
  }


# --------------------------------------------------------------------------------------------
# Reading.
