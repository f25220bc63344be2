"""Reading a snip-jax-sparse file back: dense (bit for bit) or with BCOO weight matrices.

Everything the format promises is checked before it is trusted; a file that breaks a promise
is an :class:`~snip_jax.export.format.ExportError` naming the fix.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from snip_jax import trees
from snip_jax.export.format import (
  COLLECTIONS,
  FIX,
  FORMAT,
  MANIFEST,
  VERSION,
  Exported,
  ExportError,
  matrix_shape,
)

PyTree = Any


def _fail(path: str, what: str) -> ExportError:
  return ExportError(f"{path}: {what}. {FIX}")


def _read_arrays(path: str) -> dict[str, np.ndarray]:
  """Every array of the ``.npz`` at ``path``, read in full (so that zip's CRCs are checked)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"No export at {path!r}; make one with python experiments/export.py --workdir DIR."
    )
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: np.array(data[key]) for key in data.files}
  except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
    raise _fail(path, f"not a readable .npz export, truncated or corrupt ({e})") from None


def _manifest(path: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
  if MANIFEST not in arrays:
    raise _fail(path, f"no {MANIFEST!r} entry: not a snip-jax sparse export")
  try:
    manifest = json.loads(str(arrays.pop(MANIFEST)))
  except (TypeError, ValueError) as e:
    raise _fail(path, f"its manifest is not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise _fail(path, f"not a {FORMAT!r} file")
  if manifest.get("version") != VERSION:
    raise _fail(
      path,
      f"format version {manifest.get('version')!r}; this snip-jax reads version {VERSION} "
      "(use the snip-jax that wrote it)",
    )
  return manifest


def _restore_dtype(path: str, name: str, stored: np.ndarray, dtype_name: str) -> np.ndarray:
  try:
    dtype = jnp.dtype(dtype_name)
  except TypeError:
    raise _fail(path, f"{name!r} has an unknown dtype {dtype_name!r}") from None
  if dtype.kind in "biufc":
    if stored.dtype != dtype:
      raise _fail(path, f"{name!r} is stored as {stored.dtype}, the manifest says {dtype}")
    return stored
  if stored.dtype.kind != "u" or stored.dtype.itemsize != dtype.itemsize:
    raise _fail(path, f"{name!r} holds {stored.dtype}, not the raw bits of {dtype}")
  return stored.view(dtype)


def _read_leaf(path: str, arrays: dict[str, np.ndarray], entry: dict[str, Any]):
  """``(name, shape, dtype, flat C-order positions or None, values)`` of one manifest entry,
  checked."""
  try:
    collection, leaf_path = entry["collection"], entry["path"]
    shape, dtype, layout, nnz = (
      tuple(int(n) for n in entry["shape"]),
      entry["dtype"],
      entry["layout"],
      int(entry["nnz"]),
    )
  except (KeyError, TypeError, ValueError):
    raise _fail(path, f"malformed manifest entry {entry!r}") from None
  if collection not in COLLECTIONS:
    raise _fail(path, f"unknown collection {collection!r} in the manifest")
  name = f"{collection}/{leaf_path}"
  if layout == "dense":
    if name not in arrays:
      raise _fail(path, f"the array {name!r} is missing")
    values = _restore_dtype(path, name, arrays.pop(name), dtype)
    if values.shape != shape:
      raise _fail(path, f"{name!r} has shape {values.shape}, the manifest says {shape}")
    return name, shape, values.dtype, None, values
  if layout != "csr":
    raise _fail(path, f"{name!r} has an unknown layout {layout!r}")
  for part in ("indptr", "indices", "values"):
    if f"{name}/{part}" not in arrays:
      raise _fail(path, f"the array {name + '/' + part!r} is missing")
  indptr, indices = arrays.pop(f"{name}/indptr"), arrays.pop(f"{name}/indices")
  values = _restore_dtype(path, name, arrays.pop(f"{name}/values"), dtype)
  rows, cols = matrix_shape(shape)
  if indptr.shape != (rows + 1,) or indices.shape != (nnz,) or values.shape != (nnz,):
    raise _fail(
      path,
      f"{name!r} should hold {rows + 1} row offsets and {nnz} columns and values, it holds "
      f"{indptr.shape}, {indices.shape} and {values.shape}",
    )
  if indptr.dtype.kind != "u" or indices.dtype.kind != "u":
    raise _fail(path, f"{name!r} has {indptr.dtype}/{indices.dtype} indices, not unsigned integers")
  counts = np.diff(indptr.astype(np.int64))
  if indptr[0] != 0 or indptr[-1] != nnz or np.any(counts < 0):
    raise _fail(path, f"the row offsets of {name!r} do not run from 0 up to {nnz}")
  flat = np.repeat(np.arange(rows, dtype=np.int64), counts) * cols + indices.astype(np.int64)
  if nnz and (np.any(indices >= cols) or np.any(np.diff(flat) <= 0)):
    raise _fail(path, f"the columns of {name!r} are not ascending within rows, below {cols}")
  return name, shape, values.dtype, flat, values


def _nest(items: list[tuple[str, Any]]) -> dict[str, Any]:
  """Nested dicts from ``('a/b/c', leaf)`` pairs, as Flax's variable trees are."""
  tree: dict[str, Any] = {}
  for name, leaf in items:
    *parents, last = name.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[last] = leaf
  return tree


def _check_like(path: str, tree: PyTree, like: PyTree, collection: str) -> PyTree:
  """``tree`` in the structure of ``like``, or an error naming the first difference."""
  try:
    return trees.conform(tree, like, collection)
  except trees.MismatchError as e:
    raise ExportError(
      f"{path} was exported from another model: {e}. Load it with the model it was exported from."
    ) from None


def matrices(name: str, shape: tuple[int, ...]) -> bool:
  """Default ``sparse_filter`` of :func:`load_sparse`: the 2-D weights (``Dense`` kernels)."""
  del name
  return len(shape) == 2


def _load(
  path: str | os.PathLike[str],
  like: PyTree | None,
  as_bcoo: Callable[[str, tuple[int, ...]], bool] | None,
) -> Exported:
  path = os.fspath(path)
  arrays = _read_arrays(path)
  manifest = _manifest(path, arrays)
  entries = manifest.get("leaves")
  if not isinstance(entries, list):
    raise _fail(path, "the manifest lists no leaves")
  trees: dict[str, list[tuple[str, Any]]] = {c: [] for c in COLLECTIONS}
  for entry in entries:
    name, shape, dtype, indices, values = _read_leaf(path, arrays, entry)
    collection, leaf_path = name.split("/", 1)
    if indices is None:
      leaf = jnp.asarray(values)
    elif as_bcoo is not None and as_bcoo(leaf_path, shape):
      coords = np.stack(np.unravel_index(indices, shape), axis=-1).astype(np.int32)
      leaf = sparse.BCOO(
        (jnp.asarray(values), jnp.asarray(coords)),
        shape=shape,
        indices_sorted=True,
        unique_indices=True,
      )
    else:
      dense = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype)
      dense[indices] = values
      leaf = jnp.asarray(dense.reshape(shape))
    trees[collection].append((leaf_path, leaf))
  if arrays:
    raise _fail(path, f"it has arrays its manifest does not list: {sorted(arrays)}")
  params, batch_stats = _nest(trees["params"]), _nest(trees["batch_stats"])
  if like is not None:
    if not isinstance(like, dict) or "params" not in like:
      raise TypeError("like= takes the model's variables: {'params': ..., 'batch_stats': ...}.")
    params = _check_like(path, params, like["params"], "params")
    batch_stats = _check_like(path, batch_stats, like.get("batch_stats", {}), "batch_stats")
  return Exported(params, batch_stats, manifest.get("config"), manifest.get("step"))


def load_dense(path: str | os.PathLike[str], like: PyTree | None = None) -> Exported:
  """Reads an export into dense arrays: the masked params that were exported, bit for bit.

  Args:
    path: a file written by :func:`export_sparse`.
    like: optional variables of the model the file should fit, ``{'params': ...,
      'batch_stats': ...}`` of arrays or ``jax.ShapeDtypeStruct`` s (e.g.
      ``jax.eval_shape(model.init, key, x)``): the result takes their tree structures, and a
      missing, extra, differently shaped or typed leaf is an :class:`ExportError`. Without it
      the trees are nested dicts built from the stored paths, as Flax's are.

  Raises:
    FileNotFoundError: no file at ``path``.
    ExportError: the file is truncated, corrupt, of another format or version, or does not fit
      ``like``.
  """
  return _load(path, like, None)


def load_sparse(
  path: str | os.PathLike[str],
  like: PyTree | None = None,
  sparse_filter: Callable[[str, tuple[int, ...]], bool] = matrices,
) -> Exported:
  """Reads an export with its sparse leaves as ``jax.experimental.sparse.BCOO`` arrays.

  Run the model on the result with :func:`sparse_apply`.

  Args:
    path: a file written by :func:`export_sparse`.
    like: as for :func:`load_dense` (shapes and dtypes are compared with the BCOO's).
    sparse_filter: ``sparse_filter(path, shape)`` picks which stored-sparse leaves become BCOO;
      the others are made dense. The default, :func:`matrices`, takes the 2-D weights, the
      kernels of ``nn.Dense`` layers, which :func:`sparse_apply` multiplies sparsely (a conv
      kernel must stay dense: XLA has no sparse convolution).

  Raises:
    as :func:`load_dense`.
  """
  return _load(path, like, sparse_filter)
