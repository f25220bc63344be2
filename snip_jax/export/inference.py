"""Sparse inference: a Flax model run with BCOO weight matrices (needs no data and no run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import sparse

PyTree = Any


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
