"""Mask pytrees: which leaves are prunable, how a mask is applied, measured and stored.

A mask is a pytree with the structure and leaf shapes of the params it belongs to, holding
``bool`` leaves (``True`` = keep). Non-prunable leaves (biases by default) are all ``True``.
Every other module goes through the functions here, so each fact lives in one place:

* :func:`kernels` / :func:`kernels_and_biases` decide which leaves are prunable;
* :func:`apply_mask` zeroes pruned coordinates;
* :func:`sparsity` and :func:`layer_summary` measure a mask or a set of params
  (:func:`layer_sparsities` flattens it into a dict for a metrics logger);
* :func:`overlap` compares two masks (intersection over union, per layer and in total);
* :func:`save_mask` / :func:`load_mask` store a mask as ``.npz`` keyed by tree path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
KeyPath = tuple[Any, ...]
#: Decides whether the leaf at ``path`` is prunable: ``filter_fn(path, leaf) -> bool``.
FilterFn = Callable[[KeyPath, Any], bool]


def path_name(path: KeyPath) -> str:
  """Readable name of a tree path, e.g. ``'Dense_0/kernel'``."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def kernels(path: KeyPath, leaf: Any) -> bool:
  """Default filter: weight matrices and conv kernels (leaves with ``ndim >= 2``)."""
  del path
  return np.ndim(leaf) >= 2


def kernels_and_biases(path: KeyPath, leaf: Any) -> bool:
  """Kernels plus the bias vectors of layers, as the authors' TF code prunes them.

  The offsets and scales of normalisation layers (any module whose name contains ``norm``,
  e.g. ``BatchNorm_0`` or ``conv1_norm``) are not connections and are never prunable.
  """
  if kernels(path, leaf):
    return True
  return is_bias(path) and not in_norm_layer(path)


def is_bias(path: KeyPath) -> bool:
  """Whether ``path`` names a bias vector (a leaf called ``bias``, as Flax names them)."""
  return path_name(path).rsplit("/", 1)[-1] == "bias"


def in_norm_layer(path: KeyPath) -> bool:
  """Whether ``path`` lies in a normalisation layer: a module whose name contains ``norm``."""
  return any("norm" in module.lower() for module in path_name(path).split("/")[:-1])


def prunable_leaves(tree: PyTree, filter_fn: FilterFn = kernels) -> PyTree:
  """A tree of Python bools with ``tree``'s structure: ``True`` where a leaf is prunable."""
  return jax.tree.map_with_path(filter_fn, tree)


def ones_like(params: PyTree) -> PyTree:
  """The keep-everything mask for ``params``."""
  return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def check_mask(params: PyTree, mask: PyTree) -> None:
  """Raises ``ValueError`` unless ``mask`` has the structure and leaf shapes of ``params``."""
  params_def, mask_def = jax.tree.structure(params), jax.tree.structure(mask)
  if params_def != mask_def:
    raise ValueError(
      "Mask tree does not match the params tree.\n"
      f"  params: {params_def}\n  mask:   {mask_def}\n"
      "Build the mask from these params (e.g. top_k_mask(scores_of_these_params, ...)) "
      "or load it with load_mask(path, params), which checks every leaf."
    )
  for (path, p), m in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(mask), strict=True):
    if jnp.shape(p) != jnp.shape(m):
      raise ValueError(
        f"Mask leaf {path_name(path)!r} has shape {jnp.shape(m)} but the param has shape "
        f"{jnp.shape(p)}: the mask was made for a different model."
      )


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
  """Zeroes the pruned coordinates of ``params`` (exactly ``0.0``, even where a value is NaN).

  Args:
    params: any pytree of arrays (params, gradients, updates, optimizer moments).
    mask: a mask with the same structure and shapes, ``bool`` or {0, 1} leaves.

  Returns:
    ``params`` with every coordinate where ``mask`` is false set to zero.
  """
  check_mask(params, mask)
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.result_type(p))), params, mask)


def _prunable_pairs(tree: PyTree, filter_fn: FilterFn) -> list[tuple[str, Any]]:
  return [
    (path_name(path), leaf)
    for path, leaf in jax.tree.leaves_with_path(tree)
    if filter_fn(path, leaf)
  ]


def count_prunable(tree: PyTree, filter_fn: FilterFn = kernels) -> int:
  """Number of prunable coordinates in ``tree``."""
  return sum(int(np.size(leaf)) for _, leaf in _prunable_pairs(tree, filter_fn))


def layer_summary(tree: PyTree, filter_fn: FilterFn = kernels) -> list[dict[str, Any]]:
  """Per prunable leaf: ``{'name', 'size', 'kept', 'sparsity'}``.

  ``tree`` is a mask or a set of (masked) params: a coordinate counts as kept when it is
  non-zero, so the same function measures a mask and the params it produced.
  """
  rows = []
  for name, leaf in _prunable_pairs(tree, filter_fn):
    size = int(np.size(leaf))
    kept = int(np.count_nonzero(np.asarray(leaf)))
    rows.append(
      {"name": name, "size": size, "kept": kept, "sparsity": 1.0 - kept / size if size else 0.0}
    )
  return rows


def collapsed_layers(rows: Sequence[dict[str, Any]]) -> list[str]:
  """Names of the prunable leaves left with no connection at all (layer collapse).

  A collapsed layer cuts every path from input to output, so such a network cannot learn;
  ``rows`` are :func:`layer_summary` rows.
  """
  return [r["name"] for r in rows if r["size"] and r["kept"] == 0]


def sparsity(tree: PyTree, filter_fn: FilterFn = kernels) -> float:
  """Fraction of prunable coordinates that are zero (pruned), over all prunable leaves."""
  rows = layer_summary(tree, filter_fn)
  size = sum(r["size"] for r in rows)
  if size == 0:
    raise ValueError("The tree has no prunable leaves under this filter_fn.")
  return 1.0 - sum(r["kept"] for r in rows) / size


def layer_sparsities(tree: PyTree, filter_fn: FilterFn = kernels) -> dict[str, float]:
  """``{'sparsity/<layer>': ..., 'sparsity/total': ...}``: :func:`layer_summary` as a flat
  dict of floats, ready for a metrics logger."""
  rows = layer_summary(tree, filter_fn)
  result = {f"sparsity/{r['name']}": r["sparsity"] for r in rows}
  result["sparsity/total"] = sparsity(tree, filter_fn)
  return result


def overlap(mask_a: PyTree, mask_b: PyTree, filter_fn: FilterFn = kernels) -> dict[str, Any]:
  """How far two masks of the same params agree on the kept connections.

  Intersection over union of the kept sets (1.0: identical; two random masks at density ``d``
  score about ``d / (2 - d)``). Layers where both masks keep nothing count as identical.

  Returns:
    ``{'total': iou, 'per_layer': {name: iou}, 'intersection': int, 'union': int}``, over the
    prunable leaves.

  Raises:
    ValueError: if the two masks differ in structure or shapes.
  """
  check_mask(mask_a, mask_b)
  per_layer, inter_total, union_total = {}, 0, 0
  for (path, a), b in zip(jax.tree.leaves_with_path(mask_a), jax.tree.leaves(mask_b), strict=True):
    if not filter_fn(path, a):
      continue
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    inter, union = int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))
    per_layer[path_name(path)] = inter / union if union else 1.0
    inter_total, union_total = inter_total + inter, union_total + union
  return {
    "total": inter_total / union_total if union_total else 1.0,
    "per_layer": per_layer,
    "intersection": inter_total,
    "union": union_total,
  }


def format_layer_summary(rows: Sequence[dict[str, Any]]) -> str:
  """A fixed-width table of :func:`layer_summary` rows with a total line."""
  width = max([len("layer"), len("total"), *(len(r["name"]) for r in rows)])
  lines = [f"{'layer':<{width}}  {'size':>10}  {'kept':>10}  {'sparsity':>8}"]
  lines += [
    f"{r['name']:<{width}}  {r['size']:>10,}  {r['kept']:>10,}  {r['sparsity']:>8.2%}" for r in rows
  ]
  size, kept = sum(r["size"] for r in rows), sum(r["kept"] for r in rows)
  total = 1.0 - kept / size if size else 0.0
  lines.append(f"{'total':<{width}}  {size:>10,}  {kept:>10,}  {total:>8.2%}")
  return "\n".join(lines)


def save_mask(path: str | os.PathLike[str], mask: PyTree) -> None:
  """Saves ``mask`` as an ``.npz`` of ``bool`` arrays keyed by tree path (``'Dense_0/kernel'``)."""
  arrays = {
    path_name(p): np.asarray(leaf, dtype=bool) for p, leaf in jax.tree.leaves_with_path(mask)
  }
  with open(path, "wb") as f:  # A file object keeps numpy from appending '.npz'.
    np.savez_compressed(f, **arrays)


def load_mask(path: str | os.PathLike[str], params: PyTree) -> PyTree:
  """Loads a mask saved by :func:`save_mask` into the structure of ``params``.

  Raises:
    ValueError: if a leaf of ``params`` is missing from the file, the file has extra keys, or a
      shape differs.
  """
  with np.load(path) as data:
    stored = {k: data[k] for k in data.files}
  leaves = []
  for p, _leaf in jax.tree.leaves_with_path(params):
    name = path_name(p)
    if name not in stored:
      raise ValueError(
        f"Mask file {os.fspath(path)!r} has no entry {name!r}; it was saved for a "
        f"different model (entries: {sorted(stored)})."
      )
    leaves.append(jnp.asarray(stored.pop(name), dtype=bool))
  if stored:
    raise ValueError(
      f"Mask file {os.fspath(path)!r} has entries the params lack: {sorted(stored)}."
    )
  mask = jax.tree.unflatten(jax.tree.structure(params), leaves)
  check_mask(params, mask)
  return mask
