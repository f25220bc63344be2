"""Mask pytrees: which leaves are prunable, how a mask is applied, measured and stored.

A mask is a pytree with the structure and leaf shapes of the params it belongs to, holding
``bool`` leaves (``True`` = keep). Non-prunable leaves (biases by default) are all ``True``.
Every other module goes through the functions here, so each fact lives in one place:

* :func:`kernels` (the default rule), :func:`kernels_and_biases` and
  :func:`kernels_and_embeddings` decide which leaves are prunable, :func:`exclusion` says why not;
* :func:`apply_mask` zeroes pruned coordinates;
* :func:`sparsity` and :func:`layer_summary` measure a mask or a set of params
  (:func:`layer_sparsities` flattens it into a dict for a metrics logger);
* :func:`overlap` compares two masks (intersection over union, per layer and in total);
* :func:`save_mask` / :func:`load_mask` store a mask as ``.npz`` keyed by tree path
  (:func:`leaf_names`).
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snip_jax import files

PyTree = Any
KeyPath = tuple[Any, ...]
#: Decides whether the leaf at ``path`` is prunable: ``filter_fn(path, leaf) -> bool``.
FilterFn = Callable[[KeyPath, Any], bool]


def _key_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _keys(path: KeyPath) -> tuple[Any, ...]:
  """``path`` without the ``.value`` an NNX ``State`` adds under each variable."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    return path[:-1]
  return tuple(path)


def path_name(path: KeyPath) -> str:
  """Readable name of a tree path, e.g. ``'Dense_0/kernel'`` (the same for a Linen params dict
  and an NNX ``State``, whose leaves sit under a ``.value``)."""
  return "/".join(_key_name(key) for key in _keys(path))


def leaf_names(tree: PyTree) -> list[str]:
  """:func:`path_name` of each leaf of ``tree``, in its order, which files key leaves by.

  Raises:
    ValueError: two leaves share a name (a key that contains ``/``), so a file would keep one.
  """
  names = [path_name(path) for path, _ in jax.tree.leaves_with_path(tree)]
  seen: set[str] = set()
  for name in names:
    if name in seen:
      raise ValueError(
        f"Two leaves of the tree are both named {name!r} (a key containing '/'?); a file keys "
        "leaves by these names and would keep only one: rename the key."
      )
    seen.add(name)
  return names


def leaf_name(path: KeyPath) -> str:
  """The last name of a tree path: ``'kernel'`` for ``Dense_0/kernel``."""
  keys = _keys(path)
  return _key_name(keys[-1]) if keys else ""


def is_embedding(path: KeyPath) -> bool:
  """Whether ``path`` names an embedding table: a leaf whose name has a part starting with
  ``emb`` (``embedding`` of ``nn.Embed``, ``pos_embedding``, ``pos_emb``, ...)."""
  return any(part.startswith("emb") for part in leaf_name(path).lower().split("_"))


def _weight_dtype(leaf: Any) -> bool:
  """Whether ``leaf`` can be a weight: floating point, or ``bool`` (the leaves of a mask, which
  the rule is also applied to; a ``bool`` param is never named like a weight)."""
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and (jnp.issubdtype(dtype, jnp.floating) or dtype == np.bool_)


def _not_floating_point(leaf: Any) -> str:
  return f"not floating point ({getattr(leaf, 'dtype', type(leaf).__name__)})"


def exclusion(path: KeyPath, leaf: Any) -> str | None:
  """Why the default rule (:func:`kernels`) does not prune the leaf at ``path``, or ``None``
  when it does."""
  if not _weight_dtype(leaf):
    return _not_floating_point(leaf)
  if is_bias(path):
    return "a bias"
  if in_norm_layer(path):
    return "in a normalisation layer"
  if is_embedding(path):
    return "an embedding (kernels_and_embeddings prunes it)"
  if np.ndim(leaf) < 2:
    return f"of rank {np.ndim(leaf)}, not a weight matrix or kernel"
  return None


def kernels(path: KeyPath, leaf: Any) -> bool:
  """The default rule of what is prunable: floating-point weight matrices and kernels, i.e.
  leaves of rank 2 or more: those of Dense, DenseGeneral (attention's query/key/value/out, any
  rank) and Conv layers (``kernel`` in Linen and NNX), and a hand-written model's (``w1``).

  Never biases (leaves named ``bias``, whatever their rank), normalisation scales and offsets
  (of a module :func:`in_norm_layer` recognises: ``norm`` in its name, or a part ``bn``, ``ln``
  or ``gn``), embeddings (a name part starting with ``emb``:
  opt in with :func:`kernels_and_embeddings`), or integer and key leaves (lookup tables,
  counters, RNG state). :func:`exclusion` says why a leaf is left out.
  """
  return exclusion(path, leaf) is None


def kernels_and_biases(path: KeyPath, leaf: Any) -> bool:
  """Kernels plus the biases of layers, as the authors' TF code prunes them.

  The offsets and scales of normalisation layers (:func:`in_norm_layer`: ``BatchNorm_0``,
  ``conv1_norm``, ``bn1``, ``ln_f``) are not connections and are never prunable; give another
  ``filter_fn`` for a normalisation module named otherwise.
  """
  if kernels(path, leaf):
    return True
  return _weight_dtype(leaf) and is_bias(path) and not in_norm_layer(path)


def kernels_and_embeddings(path: KeyPath, leaf: Any) -> bool:
  """Kernels plus embedding tables (token and positional), for models whose embeddings
  should be pruned too."""
  embedding = _weight_dtype(leaf) and is_embedding(path) and np.ndim(leaf) >= 2
  return kernels(path, leaf) or embedding


def is_bias(path: KeyPath) -> bool:
  """Whether ``path`` names a bias (a leaf called ``bias``, as Flax names them, any rank)."""
  return leaf_name(path) == "bias"


#: Name parts that mark a normalisation module besides any name containing ``norm``: the usual
#: short names of BatchNorm, LayerNorm and GroupNorm attributes (``bn1``, ``ln_f``, ``gn``).
NORM_ABBREVIATIONS = frozenset({"bn", "ln", "gn"})


def in_norm_layer(path: KeyPath) -> bool:
  """Whether ``path`` lies in a normalisation layer: the module that owns the leaf (the nearest
  name above it that is not a list index) has a name that contains ``norm`` (``BatchNorm_0``,
  ``conv1_norm``, ``RMSNorm_0``) or has a part of letters that is ``bn``, ``ln`` or ``gn`` (an
  NNX attribute ``bn1``, GPT-2's ``ln_f`` and ``ln_1``).

  Only the owner counts, not the modules around it: a ``PreNormBlock``'s attention and MLP
  kernels are connections.
  """
  keys = _keys(path)
  for key in reversed(keys[:-1]):
    name = _key_name(key).lower()
    if name.isdigit():  # An index of a list of layers: its owner is the list's name.
      continue
    return "norm" in name or not NORM_ABBREVIATIONS.isdisjoint(re.findall(r"[a-z]+", name))
  return False


def not_a_candidate(leaf: Any) -> jax.Array:
  """The scores of a leaf that is not a candidate for pruning: ``int8`` zeros of its shape.

  A score tree carries its candidate set this way, from scoring to selection: every criterion
  decides the candidates on the params (with its ``filter_fn``), scores them in floating point
  and gives the others integer zeros, and :func:`snip_jax.selection.top_k_mask` never selects
  over an integer leaf, whatever its own ``filter_fn``.
  """
  return jnp.zeros(jnp.shape(leaf), jnp.int8)


def is_candidate(scores_leaf: Any) -> bool:
  """Whether a leaf of a score tree can be a candidate: floating point (see
  :func:`not_a_candidate`)."""
  return jnp.issubdtype(getattr(scores_leaf, "dtype", np.int8), jnp.floating)


def candidate_scores(scores: PyTree, params: PyTree, filter_fn: FilterFn = kernels) -> PyTree:
  """``scores`` where the param is floating point and ``filter_fn(path, param)`` holds,
  :func:`not_a_candidate` elsewhere (a ``bool`` param is never a candidate, although the rule
  admits ``bool`` leaves, which a mask's are)."""
  return jax.tree.map_with_path(
    lambda path, s, p: s if is_prunable(path, p, filter_fn) else not_a_candidate(s),
    scores,
    params,
  )


def map_candidates(
  fn: Callable[..., Any], params: PyTree, *trees: PyTree, filter_fn: FilterFn = kernels
) -> PyTree:
  """A score tree: ``fn(param, *leaves)`` as ``float32`` at each candidate of ``params``
  (:func:`is_prunable`), :func:`not_a_candidate` elsewhere, so ``fn`` never sees an integer,
  ``bool`` or key leaf (a whole NNX state's RNG keys and counters).

  Args:
    fn: e.g. ``jnp.abs`` (magnitudes), or ``lambda w, g: jnp.abs(g)`` with gradients.
    params: the params, which decide the candidates.
    *trees: trees shaped like ``params`` whose leaves ``fn`` gets after the param's.
    filter_fn: which leaves are prunable.
  """
  return jax.tree.map_with_path(
    lambda path, p, *leaves: (
      jnp.asarray(fn(p, *leaves), jnp.float32)
      if is_prunable(path, p, filter_fn)
      else not_a_candidate(p)
    ),
    params,
    *trees,
  )


def normalised_scores(scores: PyTree, dtype: Any = None) -> PyTree:
  """The candidates' scores divided by their sum (kept 0, not 0/0, when it is 0), as ``dtype``
  (default: their own); the other leaves as they are."""
  total = sum(jnp.sum(s) for s in jax.tree.leaves(scores) if is_candidate(s))
  total = jnp.where(total > 0, total, 1)
  return jax.tree.map(
    lambda s: (s / total).astype(dtype or s.dtype) if is_candidate(s) else s, scores
  )


def ones_like(params: PyTree) -> PyTree:
  """The keep-everything mask for ``params``."""
  return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def conform_mask(params: PyTree, mask: PyTree) -> PyTree:
  """``mask`` with the tree structure of ``params``, checked leaf by leaf.

  A mask of the same structure is returned as it is. One of another structure whose leaves have
  the same names (:func:`path_name`) and shapes is rebuilt in ``params``' structure: a plain
  dict (``nnx.to_pure_dict``) for NNX ``State`` params, or the other way round.

  Raises:
    ValueError: a leaf is missing, extra or of another shape, named.
  """
  params_def, mask_def = jax.tree.structure(params), jax.tree.structure(mask)
  if params_def != mask_def:
    by_name = {path_name(path): m for path, m in jax.tree.leaves_with_path(mask)}
    names = [path_name(path) for path, _ in jax.tree.leaves_with_path(params)]
    missing = [n for n in names if n not in by_name]
    extra = sorted(set(by_name) - set(names))
    if missing or extra or len(by_name) != len(jax.tree.leaves(mask)):
      which = f"no leaf {missing[0]!r}" if missing else f"a leaf {extra[0]!r} the params lack"
      raise ValueError(
        f"Mask tree does not match the params tree: the mask has {which}. Build the mask "
        "from these params (e.g. top_k_mask(scores_of_these_params, ...)) or load it with "
        "load_mask(path, params), which checks every leaf."
      )
    mask = jax.tree.unflatten(params_def, [by_name[n] for n in names])
  for (path, p), m in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(mask), strict=True):
    if jnp.shape(p) != jnp.shape(m):
      raise ValueError(
        f"Mask leaf {path_name(path)!r} has shape {jnp.shape(m)} but the param has shape "
        f"{jnp.shape(p)}: the mask was made for a different model."
      )
  return mask


def check_mask(params: PyTree, mask: PyTree) -> None:
  """Raises ``ValueError`` unless ``mask`` fits ``params`` (see :func:`conform_mask`)."""
  conform_mask(params, mask)


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
  """Zeroes the pruned coordinates of ``params`` (exactly ``0.0``, even where a value is NaN).

  Args:
    params: any pytree of arrays (params, gradients, updates, optimizer moments).
    mask: a mask that fits them (:func:`conform_mask`), ``bool`` or {0, 1} leaves.

  Returns:
    ``params`` with every coordinate where ``mask`` is false set to zero. Integer and key
    leaves (counters, RNG state) are never pruned and come back as they are.
  """
  mask = conform_mask(params, mask)
  return jax.tree.map(
    lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.result_type(p))) if _weight_dtype(p) else p,
    params,
    mask,
  )


def is_prunable(path: KeyPath, param: Any, filter_fn: FilterFn = kernels) -> bool:
  """Whether the param at ``path`` is a candidate for pruning: floating point and admitted by
  ``filter_fn`` (the rules also admit ``bool`` leaves, a mask's, but a ``bool`` param is never a
  candidate)."""
  return is_candidate(param) and filter_fn(path, param)


def _prunable_pairs(
  tree: PyTree, filter_fn: FilterFn, params: PyTree | None = None
) -> list[tuple[str, Any]]:
  """``(name, leaf)`` per prunable leaf of ``tree``: decided on ``params``' leaves when given
  (``tree`` is then a mask or score tree that fits them), else on ``tree``'s own: as params
  (:func:`is_prunable`) when one of its leaves is floating point, as a mask otherwise."""
  if params is None:
    if not any(is_candidate(leaf) for leaf in jax.tree.leaves(tree)):
      return [
        (path_name(path), leaf)
        for path, leaf in jax.tree.leaves_with_path(tree)
        if filter_fn(path, leaf)
      ]
    params = tree
  else:
    tree = conform_mask(params, tree)
  return [
    (path_name(path), leaf)
    for (path, param), leaf in zip(
      jax.tree.leaves_with_path(params), jax.tree.leaves(tree), strict=True
    )
    if is_prunable(path, param, filter_fn)
  ]


def count_prunable(tree: PyTree, filter_fn: FilterFn = kernels) -> int:
  """Number of prunable coordinates in ``tree``."""
  return sum(int(np.size(leaf)) for _, leaf in _prunable_pairs(tree, filter_fn))


def layer_summary(
  tree: PyTree, filter_fn: FilterFn = kernels, *, params: PyTree | None = None
) -> list[dict[str, Any]]:
  """Per prunable leaf: ``{'name', 'size', 'kept', 'sparsity'}``.

  ``tree`` is a mask or a set of (masked) params: a coordinate counts as kept when it is
  non-zero, so the same function measures a mask and the params it produced.

  Which leaves are prunable is decided on ``params``' leaves when given, else on ``tree``'s
  own (:func:`is_prunable` when ``tree`` holds a floating-point leaf, so is params). A bare
  mask cannot tell them apart everywhere: the mask of an integer or ``bool`` table of rank 2 is
  a ``bool`` matrix like a kernel's. So measure the masked params, or pass the params with a
  mask (``layer_summary(mask, params=params)``) when they hold such tables.
  """
  rows = []
  for name, leaf in _prunable_pairs(tree, filter_fn, params):
    size = int(np.size(leaf))
    kept = int(np.count_nonzero(np.asarray(leaf)))
    rows.append(
      {"name": name, "size": size, "kept": kept, "sparsity": 1.0 - kept / size if size else 0.0}
    )
  return rows


def excluded_leaves(tree: PyTree, filter_fn: FilterFn = kernels) -> list[dict[str, Any]]:
  """Per param of ``tree`` that is not a candidate for pruning (:func:`is_prunable`):
  ``{'name', 'size', 'reason'}``, the reason of the default rule (:func:`exclusion`) where it
  has one."""

  def reason(path, leaf):
    if not is_candidate(leaf):  # A bool param too, which the rule (applied to masks) admits.
      return _not_floating_point(leaf)
    return exclusion(path, leaf) or "left out by filter_fn"

  return [
    {"name": path_name(path), "size": int(np.size(leaf)), "reason": reason(path, leaf)}
    for path, leaf in jax.tree.leaves_with_path(tree)
    if not is_prunable(path, leaf, filter_fn)
  ]


def collapsed_layers(rows: Sequence[dict[str, Any]]) -> list[str]:
  """Names of the prunable leaves left with no connection at all (layer collapse).

  A collapsed layer cuts every path from input to output, so such a network cannot learn;
  ``rows`` are :func:`layer_summary` rows.
  """
  return [r["name"] for r in rows if r["size"] and r["kept"] == 0]


def sparsity(tree: PyTree, filter_fn: FilterFn = kernels, *, params: PyTree | None = None) -> float:
  """Fraction of prunable coordinates that are zero (pruned), over all prunable leaves
  (decided on ``params`` when given, see :func:`layer_summary`)."""
  rows = layer_summary(tree, filter_fn, params=params)
  size = sum(r["size"] for r in rows)
  if size == 0:
    raise ValueError("The tree has no prunable leaves under this filter_fn.")
  return 1.0 - sum(r["kept"] for r in rows) / size


def layer_sparsities(
  tree: PyTree, filter_fn: FilterFn = kernels, *, params: PyTree | None = None
) -> dict[str, float]:
  """``{'sparsity/<layer>': ..., 'sparsity/total': ...}``: :func:`layer_summary` as a flat
  dict of floats, ready for a metrics logger."""
  rows = layer_summary(tree, filter_fn, params=params)
  result = {f"sparsity/{r['name']}": r["sparsity"] for r in rows}
  result["sparsity/total"] = sparsity(tree, filter_fn, params=params)
  return result


def overlap(
  mask_a: PyTree, mask_b: PyTree, filter_fn: FilterFn = kernels, *, params: PyTree | None = None
) -> dict[str, Any]:
  """How far two masks of the same params agree on the kept connections.

  Intersection over union of the kept sets (1.0: identical; two random masks at density ``d``
  score about ``d / (2 - d)``). Layers where both masks keep nothing count as identical.

  Returns:
    ``{'total': iou, 'per_layer': {name: iou}, 'intersection': int, 'union': int}``, over the
    prunable leaves (decided on ``params`` when given, see :func:`layer_summary`).

  Raises:
    ValueError: if the two masks differ in structure or shapes.
  """
  mask_b = conform_mask(mask_a, mask_b)
  b_by_name = {path_name(path): b for path, b in jax.tree.leaves_with_path(mask_b)}
  per_layer, inter_total, union_total = {}, 0, 0
  for name, a in _prunable_pairs(mask_a, filter_fn, params):
    a, b = np.asarray(a, bool), np.asarray(b_by_name[name], bool)
    inter, union = int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))
    per_layer[name] = inter / union if union else 1.0
    inter_total, union_total = inter_total + inter, union_total + union
  return {
    "total": inter_total / union_total if union_total else 1.0,
    "per_layer": per_layer,
    "intersection": inter_total,
    "union": union_total,
  }


def format_layer_summary(
  rows: Sequence[dict[str, Any]], excluded: Sequence[dict[str, Any]] = ()
) -> str:
  """A fixed-width table of :func:`layer_summary` rows with a total line, then the leaves
  left out of pruning (:func:`excluded_leaves`) with their reasons, when given."""
  width = max([len("layer"), len("total"), *(len(r["name"]) for r in rows)])
  lines = [f"{'layer':<{width}}  {'size':>10}  {'kept':>10}  {'sparsity':>8}"]
  lines += [
    f"{r['name']:<{width}}  {r['size']:>10,}  {r['kept']:>10,}  {r['sparsity']:>8.2%}" for r in rows
  ]
  size, kept = sum(r["size"] for r in rows), sum(r["kept"] for r in rows)
  total = 1.0 - kept / size if size else 0.0
  lines.append(f"{'total':<{width}}  {size:>10,}  {kept:>10,}  {total:>8.2%}")
  reasons: dict[str, list[str]] = {}
  for leaf in excluded:
    reasons.setdefault(leaf["reason"], []).append(leaf["name"])
  for reason, names in reasons.items():
    lines += textwrap.wrap(
      f"not pruned ({reason}): {', '.join(names)}", 100, subsequent_indent="  "
    )
  return "\n".join(lines)


def save_mask(path: str | os.PathLike[str], mask: PyTree) -> None:
  """Saves ``mask`` as an ``.npz`` of ``bool`` arrays keyed by tree path (``'Dense_0/kernel'``)."""
  arrays = {
    name: np.asarray(leaf, dtype=bool)
    for name, leaf in zip(leaf_names(mask), jax.tree.leaves(mask), strict=True)
  }
  # Atomic: a crash leaves the old mask or the new one. A file object keeps numpy from
  # appending '.npz'.
  with files.atomic_writer(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def load_mask(path: str | os.PathLike[str], params: PyTree) -> PyTree:
  """Loads a mask saved by :func:`save_mask` into the structure of ``params``.

  Raises:
    ValueError: if the file is not a complete ``.npz``, a leaf of ``params`` is missing from
      it, it has extra keys, an entry is not ``bool`` or a shape differs.
  """
  try:
    with np.load(path) as data:  # No pickles: allow_pickle is off.
      stored = {k: data[k] for k in data.files}
  except FileNotFoundError:
    raise
  except files.ZIP_ERRORS as e:
    raise ValueError(
      f"Mask file {os.fspath(path)!r} cannot be read ({e}): it is not a complete .npz written "
      "by save_mask."
    ) from None
  leaves = []
  for p, _leaf in jax.tree.leaves_with_path(params):
    name = path_name(p)
    if name not in stored:
      raise ValueError(
        f"Mask file {os.fspath(path)!r} has no entry {name!r}; it was saved for a "
        f"different model (entries: {sorted(stored)})."
      )
    array = stored.pop(name)
    if array.dtype != np.bool_:
      raise ValueError(
        f"Mask file {os.fspath(path)!r}: entry {name!r} is {array.dtype}, not bool; it is not "
        "a mask saved by save_mask."
      )
    leaves.append(jnp.asarray(array))
  if stored:
    raise ValueError(
      f"Mask file {os.fspath(path)!r} has entries the params lack: {sorted(stored)}."
    )
  mask = jax.tree.unflatten(jax.tree.structure(params), leaves)
  check_mask(params, mask)
  return mask
