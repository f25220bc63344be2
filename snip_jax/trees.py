"""Pytree checks shared by everything that reads a model's arrays back from a file."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from snip_jax import masks

PyTree = Any


class MismatchError(ValueError):
  """A tree read from a file does not have the structure, shapes or dtypes of the model's."""


def _is_bcoo(x: Any) -> bool:
  return isinstance(x, sparse.BCOO)


def conform(tree: PyTree, like: PyTree, collection: str) -> PyTree:
  """``tree``'s leaves in the structure of ``like``, matched by path name.

  Args:
    tree: what was read (nested dicts; ``BCOO`` leaves count as leaves).
    like: the model's tree (arrays or ``jax.ShapeDtypeStruct`` s).
    collection: its name in messages (``params``, ``batch_stats``).

  Raises:
    MismatchError: naming the first difference: missing or extra leaves, or a leaf of another
      dtype or shape.
  """
  pairs = jax.tree.leaves_with_path(tree, is_leaf=_is_bcoo)
  have = {masks.path_name(p): leaf for p, leaf in pairs}
  want = [(masks.path_name(p), leaf) for p, leaf in jax.tree.leaves_with_path(like)]
  missing = [name for name, _ in want if name not in have]
  extra = sorted(set(have) - {name for name, _ in want})
  if missing or extra:
    raise MismatchError(f"its {collection} lack {missing} and have extra {extra}")
  leaves = []
  for name, target in want:
    leaf = have[name]
    got = (jnp.dtype(leaf.dtype), tuple(leaf.shape))
    if got != (jnp.dtype(target.dtype), tuple(target.shape)):
      raise MismatchError(
        f"{collection}/{name} is {got[0]}{list(got[1])}, the model's is "
        f"{jnp.dtype(target.dtype)}{list(target.shape)}"
      )
    leaves.append(leaf)
  return jax.tree.unflatten(jax.tree.structure(like), leaves)


def bit_equal(a: PyTree, b: PyTree) -> bool:
  """Whether two trees have the same structure, shapes, dtypes and bits (NaN and -0.0 too)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
      return False
  return True


def variables(params: PyTree, batch_stats: PyTree) -> dict[str, PyTree]:
  """``{'params': ..., 'batch_stats': ...}`` for ``apply``, without an empty ``batch_stats``."""
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
