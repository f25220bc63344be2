"""Compact export of a pruned model, and sparse inference from it.

A mask multiplied into dense weights saves nothing in memory or compute: a 98%-sparse
LeNet-300-100 still holds and multiplies all 266,200 kernel weights (on disk, only a compressing
format squeezes the zeros out). :func:`export_sparse` writes only the kept ones;
:func:`load_dense` reads them back into the exact masked params, and :func:`load_sparse` into
params whose weight matrices are ``jax.experimental.sparse.BCOO`` arrays, which
:func:`sparse_apply` runs through the unchanged Flax model::

  export.export_sparse("model.npz", params, mask, config=config)   # kept weights + indices
  exported = export.load_sparse("model.npz")                       # BCOO weight matrices
  logits = jax.jit(export.sparse_apply(model.apply))(exported.variables, images)

For a run of ``experiments/train.py``, :func:`export_workdir` does it from the workdir (the CLI is
``experiments/export.py``).

**The file** (format ``snip-jax-sparse``, version 1) is an ``.npz`` (a zip of ``.npy`` arrays,
deflate-compressed) that plain NumPy reads: ``np.load(path)``. It holds

* ``__manifest__``: a 0-d string array of JSON,
  ``{"format": "snip-jax-sparse", "version": 1, "leaves": [...], "config": {...} | null,
  "step": int | null, "snip_jax_version": str}``. Each entry of ``leaves`` describes one array
  of the model, in tree order: ``{"collection": "params" | "batch_stats", "path":
  "Dense_0/kernel", "shape": [784, 300], "dtype": "float32", "layout": "csr" | "dense",
  "nnz": int}`` (``nnz``: stored values). ``config`` is the run's config (what
  :func:`model_from_config` rebuilds the model from) when one was given.
* for a ``"csr"`` leaf (a prunable leaf: kernels by default), its kept entries in CSR form
  (compressed sparse rows) of the leaf viewed as a matrix ``[size // shape[-1], shape[-1]]``
  (a ``Dense`` kernel ``[in, out]`` as it is, a conv kernel ``[h, w, in, out]`` as
  ``[h * w * in, out]``, a vector as one row): ``<collection>/<path>/indptr`` (``rows + 1``
  offsets: row ``r``'s entries are ``indptr[r]:indptr[r + 1]``), ``<collection>/<path>/indices``
  (their columns, ascending within each row) and ``<collection>/<path>/values`` (the entries, in
  the leaf's dtype). Index arrays use the smallest unsigned integer type that holds them
  (``uint8`` for 10 columns, ``uint16`` up to 65,536). Every other entry is ``+0.0``.
  ``scipy.sparse.csr_matrix((values, indices, indptr), shape=(rows, cols))`` reads a leaf as it
  is.
* for a ``"dense"`` leaf (biases, batch-norm statistics, anything not prunable),
  ``<collection>/<path>``: the whole array.

Values whose dtype NumPy cannot store (``bfloat16`` and the other ``ml_dtypes``) are stored as
their raw bits (an unsigned integer array of the same width); the manifest keeps the dtype.
Reading checks everything the format promises and raises :class:`ExportError`, naming the fix,
for a file that is truncated, corrupt, of another format or version, or exported from another
model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from jax.experimental import sparse

import snip_jax
from snip_jax import checkpoint, data, masks, train

PyTree = Any

FORMAT = "snip-jax-sparse"
VERSION = 1
MANIFEST = "__manifest__"
#: The collections of a model's variables an export holds.
COLLECTIONS = ("params", "batch_stats")
_FIX = "Export it again (python experiments/export.py --workdir DIR, or export.export_sparse)."


class ExportError(ValueError):
  """A file is not a readable snip-jax sparse export, or it does not fit the model."""


def _variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
  """``{'params': ..., 'batch_stats': ...}`` for ``apply``, without an empty ``batch_stats``."""
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


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
    return _variables(self.params, self.batch_stats)


# --------------------------------------------------------------------------------------------
# Writing.


def _uint_for(largest: int) -> np.dtype:
  """The smallest unsigned integer dtype that holds ``largest``."""
  for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
    if largest <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f"{largest} is too large to index.")


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
  """The ``[rows, cols]`` view of a leaf that its CSR form describes."""
  cols = shape[-1] if shape else 1
  size = int(np.prod(shape, dtype=np.int64))
  return (size // cols if cols else 0), cols


def _storable(values: np.ndarray) -> np.ndarray:
  """``values`` as NumPy stores them: the raw bits for dtypes outside NumPy (``bfloat16``)."""
  if values.dtype.kind in "biufc":
    return values
  return values.view(np.dtype(f"uint{8 * values.dtype.itemsize}"))


def _dense_leaf(arrays: dict[str, np.ndarray], collection: str, path: str, value) -> dict:
  """Stores ``value`` whole; returns its manifest entry."""
  arrays[f"{collection}/{path}"] = _storable(value)
  entry = {"collection": collection, "path": path, "shape": list(value.shape)}
  return {**entry, "dtype": value.dtype.name, "layout": "dense", "nnz": int(value.size)}


def _csr_leaf(arrays: dict[str, np.ndarray], path: str, value, kept) -> dict:
  """Stores the entries of ``value`` at the flat positions ``kept`` (ascending) as CSR."""
  rows, cols = _matrix_shape(value.shape)
  row_of, col_of = np.divmod(kept, max(cols, 1))
  indptr = np.searchsorted(row_of, np.arange(rows + 1))  # Where each row's entries start.
  name = f"params/{path}"
  arrays[f"{name}/indptr"] = indptr.astype(_uint_for(kept.size))
  arrays[f"{name}/indices"] = col_of.astype(_uint_for(max(cols - 1, 0)))
  arrays[f"{name}/values"] = _storable(value.reshape(-1)[kept])
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
      entries, so the file holds ``apply_mask(params, mask)``. ``None``: keep every entry
      that is not ``+0.0`` (the params are already masked).
    batch_stats: the model's ``batch_stats`` collection, stored dense (``None``: none).
    config: the run's config, stored so that :func:`model_from_config` can rebuild the model.
    step: the training step of ``params``, stored for reference.
    filter_fn: which leaves are prunable, i.e. stored sparse (the mask's filter).

  Returns:
    ``{'file_bytes', 'kept', 'prunable'}``: the file's size, and the stored and total entries
    of the prunable leaves.

  Raises:
    ValueError: ``mask`` does not match ``params``.
  """
  if mask is not None:
    masks.check_mask(params, mask)
  num_leaves = len(jax.tree.leaves(params))
  mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * num_leaves
  arrays: dict[str, np.ndarray] = {}
  leaves: list[dict[str, Any]] = []
  kept_total = prunable_total = 0
  for (tree_path, leaf), keep in zip(jax.tree.leaves_with_path(params), mask_leaves, strict=True):
    value, name = np.asarray(leaf), masks.path_name(tree_path)
    if not filter_fn(tree_path, leaf):
      leaves.append(_dense_leaf(arrays, "params", name, value))
      continue
    flat = value.reshape(-1)
    if keep is None:  # Every entry whose bits are not those of +0.0 (-0.0 is kept).
      kept = np.flatnonzero((flat != 0) | np.signbit(flat))
    else:
      kept = np.flatnonzero(np.asarray(keep).reshape(-1))
    leaves.append(_csr_leaf(arrays, name, value, kept))
    kept_total, prunable_total = kept_total + kept.size, prunable_total + flat.size
  for tree_path, leaf in jax.tree.leaves_with_path(batch_stats or {}):
    leaves.append(_dense_leaf(arrays, "batch_stats", masks.path_name(tree_path), np.asarray(leaf)))
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
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as f:
    try:
      np.savez_compressed(f, **arrays)
    except BaseException:
      f.close()
      os.remove(f.name)
      raise
  os.replace(f.name, path)
  return {
    "file_bytes": os.path.getsize(path),
    "kept": int(kept_total),
    "prunable": int(prunable_total),
  }


# --------------------------------------------------------------------------------------------
# Reading.


def _fail(path: str, what: str) -> ExportError:
  return ExportError(f"{path}: {what}. {_FIX}")


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
  rows, cols = _matrix_shape(shape)
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


def _is_bcoo(x: Any) -> bool:
  return isinstance(x, sparse.BCOO)


def _check_like(path: str, tree: PyTree, like: PyTree, collection: str) -> PyTree:
  """``tree`` in the structure of ``like``, or an error naming the first difference."""
  pairs = jax.tree.leaves_with_path(tree, is_leaf=_is_bcoo)
  have = {masks.path_name(p): leaf for p, leaf in pairs}
  want = [(masks.path_name(p), leaf) for p, leaf in jax.tree.leaves_with_path(like)]
  missing = [name for name, _ in want if name not in have]
  extra = sorted(set(have) - {name for name, _ in want})
  if missing or extra:
    raise ExportError(
      f"{path} was exported from another model: its {collection} lack {missing} and have "
      f"extra {extra}. Load it with the model it was exported from."
    )
  leaves = []
  for name, target in want:
    leaf = have[name]
    got = (jnp.dtype(leaf.dtype), tuple(leaf.shape))
    if got != (jnp.dtype(target.dtype), tuple(target.shape)):
      raise ExportError(
        f"{path} was exported from another model: {collection}/{name} is {got[0]}"
        f"{list(got[1])}, the model's is {jnp.dtype(target.dtype)}{list(target.shape)}. Load "
        "it with the model it was exported from."
      )
    leaves.append(leaf)
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


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


# --------------------------------------------------------------------------------------------
# Sparse inference.


def _sparse_dense_layer(next_fun, args, kwargs, context):
  """Flax method interceptor: an ``nn.Dense`` whose kernel is a BCOO multiplies sparsely.

  It honours the layer's ``dtype`` and ``use_bias``; ``precision`` and a custom
  ``dot_general`` do not apply to a sparse product.
  """
  module = context.module
  if not isinstance(module, nn.Dense) or context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  params = module.variables.get("params", {})
  kernel = params.get("kernel")
  if not isinstance(kernel, sparse.BCOO):
    return next_fun(*args, **kwargs)
  (inputs,) = args
  dtype = module.dtype or jnp.result_type(inputs.dtype, kernel.dtype)
  # dense @ BCOO: a gather of the inputs at the kept rows, scaled and summed into the outputs.
  y = jnp.asarray(inputs, dtype) @ kernel.astype(dtype)
  if module.use_bias:
    y = y + jnp.asarray(params["bias"], dtype)
  return y


def sparse_apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
  """``apply_fn`` (a Flax ``model.apply``) with every ``nn.Dense`` whose kernel is a ``BCOO``
  computed as a sparse matmul (``jax.experimental.sparse``); everything else is unchanged.

  Use it with the params of :func:`load_sparse`; it composes with ``jax.jit``::

    forward = jax.jit(export.sparse_apply(model.apply))
    logits = forward(exported.variables, images)
  """

  def apply(variables, *args, **kwargs):
    with nn.intercept_methods(_sparse_dense_layer):
      return apply_fn(variables, *args, **kwargs)

  return apply


def tree_bytes(tree: PyTree) -> int:
  """Bytes the arrays of ``tree`` take (a ``BCOO`` counts its values and its indices)."""
  return sum(int(np.asarray(leaf).nbytes) for leaf in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------------
# Runs of train_and_evaluate.


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A run of :func:`snip_jax.train.train_and_evaluate`, read back from its workdir.

  Attributes:
    config: the run's config (its ``config.json``).
    model: the Flax module the config builds.
    params: the params of the newest checkpoint, masked (pruned entries exactly ``0.0``).
    batch_stats: the model's ``batch_stats`` collection (``{}`` without batch norm).
    mask: the run's mask (its ``mask.npz``).
    step: the training step of the checkpoint.
    finished: whether the checkpoint is the end of the run (its ``summary.json`` says so).
  """

  config: ml_collections.ConfigDict
  model: nn.Module
  params: PyTree
  batch_stats: PyTree
  mask: PyTree
  step: int
  finished: bool

  @property
  def variables(self) -> dict[str, PyTree]:
    """As :attr:`Exported.variables`."""
    return _variables(self.params, self.batch_stats)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one input example, ``(H, W, C)``."""
    return tuple(data.get_spec(self.config.dataset).image_shape)


def read_run(workdir: str | os.PathLike[str]) -> TrainedRun:
  """The newest checkpoint of the run in ``workdir``, with its model, config and mask.

  Raises:
    FileNotFoundError: ``workdir`` holds no run (no ``config.json``, mask or checkpoint).
    CheckpointError: the newest checkpoint cannot be read.
    ExportError: the checkpoint does not fit the model of the workdir's config.
  """
  workdir = os.fspath(workdir)
  names = ("config.json", "mask.npz")
  steps = checkpoint.saved_steps(workdir)
  if not steps or not all(os.path.exists(os.path.join(workdir, n)) for n in names):
    raise FileNotFoundError(
      f"No trained run in {workdir!r}: it needs config.json, mask.npz and checkpoints/. Train "
      f"one with python experiments/train.py --workdir {workdir}."
    )
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = train.make_model(config)
  shapes = train.abstract_variables(config, model)
  state = checkpoint.read_state(workdir, steps[-1])
  stored = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  variables = {c: _check_like(workdir, stored[c], shapes.get(c, {}), c) for c in stored}
  mask = masks.load_mask(os.path.join(workdir, "mask.npz"), variables["params"])
  summary_path = os.path.join(workdir, "summary.json")
  finished = False
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      finished = json.load(f).get("steps") == steps[-1]
  return TrainedRun(
    config=config,
    model=model,
    # Already masked by training; applying the mask again changes no bit of a kept weight.
    params=masks.apply_mask(variables["params"], mask),
    batch_stats=variables["batch_stats"],
    mask=mask,
    step=steps[-1],
    finished=finished,
  )


def bit_equal(a: PyTree, b: PyTree) -> bool:
  """Whether two trees have the same structure, shapes, dtypes and bits (NaN and -0.0 too)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
      return False
  return True


def export_workdir(
  workdir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> tuple[TrainedRun, str, dict[str, int]]:
  """Exports the newest checkpoint of the run in ``workdir`` (see :func:`export_sparse`).

  The file (default ``<workdir>/sparse_model.npz``) holds the masked params, the batch-norm
  statistics, the run's config and the step. It is read back before this returns: the dense
  params it gives must equal the checkpoint's masked params bit for bit.

  Returns:
    ``(run, path, info)``: the run read from ``workdir`` (:func:`read_run`), the file written
    and :func:`export_sparse`'s ``info``.

  Raises:
    as :func:`read_run`.
  """
  run = read_run(workdir)
  path = os.fspath(path or os.path.join(workdir, train.EXPORT_FILES[0]))
  info = export_sparse(
    path,
    run.params,
    run.mask,
    batch_stats=run.batch_stats,
    config=run.config,
    step=run.step,
    filter_fn=train.filter_fn_for(run.config),
  )
  loaded = load_dense(path, like=run.variables)
  if not (bit_equal(loaded.params, run.params) and bit_equal(loaded.batch_stats, run.batch_stats)):
    raise ExportError(f"{path} does not read back to the params it was written from.")
  return run, path, info


def model_from_config(config: dict[str, Any] | ml_collections.ConfigDict) -> nn.Module:
  """The Flax module of an export's config (:attr:`Exported.config`).

  Raises:
    ExportError: the export holds no config, or one without ``model``, ``dataset`` and
      ``init``.
  """
  if not config or any(field not in config for field in ("model", "dataset", "init")):
    raise ExportError(
      "This export has no run config (model, dataset, init) to rebuild the model from; build "
      "the model yourself, or export with export_sparse(..., config=config)."
    )
  return train.make_model(ml_collections.ConfigDict(dict(config)))


def predict(apply_fn: Callable[..., Any], variables: PyTree, split: data.Split, batch_size: int):
  """The logits of ``apply_fn(variables, images, train=False)`` on every example of ``split``,
  in batches of ``batch_size`` (one compiled function: the last batch is padded)."""
  forward = jax.jit(lambda v, x: apply_fn(v, x, train=False))
  logits = [
    np.asarray(forward(variables, images)) for images, _, _ in data.eval_batches(split, batch_size)
  ]
  return np.concatenate(logits)[: len(split)]


def check_on(run: TrainedRun, path: str | os.PathLike[str], split: data.Split, batch_size: int):
  """Runs the export at ``path`` sparsely (:func:`load_sparse`, :func:`sparse_apply`) and the
  run's dense masked params on ``split``, and compares them.

  Returns:
    ``{'examples', 'dense_accuracy', 'sparse_accuracy', 'predictions_differ',
    'max_abs_logit', 'max_abs_diff'}``: the accuracies, how many predicted classes differ, the
    largest logit and the largest difference between the two models' logits.
  """
  dense = predict(run.model.apply, run.variables, split, batch_size)
  exported = load_sparse(path, like=run.variables)
  sparse_logits = predict(sparse_apply(run.model.apply), exported.variables, split, batch_size)
  dense_pred, sparse_pred = dense.argmax(-1), sparse_logits.argmax(-1)
  return {
    "examples": len(split),
    "dense_accuracy": float(np.mean(dense_pred == split.labels)),
    "sparse_accuracy": float(np.mean(sparse_pred == split.labels)),
    "predictions_differ": int(np.sum(dense_pred != sparse_pred)),
    "max_abs_logit": float(np.max(np.abs(dense))),
    "max_abs_diff": float(np.max(np.abs(dense - sparse_logits))),
  }


def disk_bytes(path: str | os.PathLike[str]) -> int:
  """Size of a file, or of every file under a directory (e.g. an Orbax checkpoint)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
  )
