"""Sparse inference: a Flax model run with BCOO weight matrices, checked against the dense one."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import sparse

from snip_jax import data
from snip_jax.export.read import load_sparse
from snip_jax.train.workdir import TrainedRun

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
