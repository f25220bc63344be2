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

The modules: :mod:`~snip_jax.export.format` (constants, :class:`ExportError`, :class:`Exported`),
:mod:`~snip_jax.export.write`, :mod:`~snip_jax.export.read`, :mod:`~snip_jax.export.inference`
(:func:`sparse_apply`) and :mod:`~snip_jax.export.runs` (a workdir's run).

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

import importlib
from typing import Any

from snip_jax.export.format import COLLECTIONS, FORMAT, MANIFEST, VERSION, Exported, ExportError
from snip_jax.export.inference import sparse_apply, tree_bytes
from snip_jax.export.read import load_dense, load_sparse, matrices
from snip_jax.export.write import export_sparse
from snip_jax.trees import bit_equal

#: The names that read a run from its workdir, imported when first used: they need
#: snip_jax.train and snip_jax.data, hence the [data,experiments] extras, which the format and
#: sparse inference above do not.
_RUN_NAMES = {
  "TrainedRun": "snip_jax.train.workdir",
  "check_on": "snip_jax.export.runs",
  "disk_bytes": "snip_jax.export.runs",
  "export_workdir": "snip_jax.export.runs",
  "model_from_config": "snip_jax.export.runs",
  "predict": "snip_jax.export.runs",
  "read_run": "snip_jax.train.workdir",
}


def __getattr__(name: str) -> Any:
  if name not in _RUN_NAMES:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(_RUN_NAMES[name]), name)


__all__ = [
  "COLLECTIONS",
  "FORMAT",
  "MANIFEST",
  "VERSION",
  "ExportError",
  "Exported",
  "TrainedRun",
  "bit_equal",
  "check_on",
  "disk_bytes",
  "export_sparse",
  "export_workdir",
  "load_dense",
  "load_sparse",
  "matrices",
  "model_from_config",
  "predict",
  "read_run",
  "sparse_apply",
  "tree_bytes",
]
