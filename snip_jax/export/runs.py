"""The runs of :func:`snip_jax.train.train_and_evaluate`: exported from their workdirs, and their
exports checked against them on a data split (these need snip_jax.train and snip_jax.data)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from snip_jax import data, train, trees
from snip_jax.export.format import ExportError
from snip_jax.export.inference import sparse_apply
from snip_jax.export.read import load_dense, load_sparse
from snip_jax.export.write import export_sparse
from snip_jax.train.workdir import TrainedRun, read_run


def export_workdir(
  workdir: str | os.PathLike[str],
  path: str | os.PathLike[str] | None = None,
  *,
  lock: bool = True,
) -> tuple[TrainedRun, str, dict[str, int]]:
  """Exports the newest checkpoint of the run in ``workdir`` (see :func:`export_sparse`).

  The file (default ``<workdir>/sparse_model.npz``; a path must end in ``.npz``) holds the
  masked params, the batch-norm statistics, the run's config and the step. It is read back
  before this returns: the dense params it gives must equal the checkpoint's masked params bit
  for bit. The workdir's lock is held throughout (``lock=False``: the caller holds it), so a run
  still writing there is never read half-way: it is refused with one line naming it.

  Returns:
    ``(run, path, info)``: the run read from ``workdir`` (:func:`read_run`), the file written
    and :func:`export_sparse`'s ``info``.

  Raises:
    as :func:`read_run`.
  """
  path = os.fspath(path or os.path.join(workdir, train.EXPORT_FILES[0]))
  if not path.endswith(".npz"):
    raise ValueError(
      f"The export's path must end in .npz (its report is the .json beside it): {path!r}."
    )
  train.check_is_run(workdir)  # Before the lock, which would create a file in any directory.
  with train.lock_workdir(workdir) if lock else contextlib.nullcontext():
    return _export(workdir, path)


def _export(workdir: str | os.PathLike[str], path: str) -> tuple[TrainedRun, str, dict[str, int]]:
  run = read_run(workdir)
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
  if not (
    trees.bit_equal(loaded.params, run.params)
    and trees.bit_equal(loaded.batch_stats, run.batch_stats)
  ):
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


def disk_bytes(path: str | os.PathLike[str]) -> int:
  """Size of a file, or of every file under a directory (e.g. an Orbax checkpoint)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
  )


def predict(apply_fn: Callable[..., Any], variables: Any, split: data.Split, batch_size: int):
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
