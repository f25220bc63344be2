"""Exporting the runs of :func:`snip_jax.train.train_and_evaluate` from their workdirs."""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from flax import linen as nn

from snip_jax import train, trees
from snip_jax.export.format import ExportError
from snip_jax.export.read import load_dense
from snip_jax.export.write import export_sparse
from snip_jax.train.workdir import TrainedRun, read_run


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
