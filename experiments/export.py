"""Exports a trained run as a compact sparse model, and checks it on the test set.

  python experiments/export.py --workdir runs/lenet300_fashion_mnist_sp0.98_seed0_f54c18c2

writes ``<workdir>/sparse_model.npz``: only the kept weights and their indices, plus the biases,
batch-norm statistics and the run's config (format: ``snip_jax/export.py``). It reads the file
back (the dense params must equal the checkpoint's masked params bit for bit), then runs it on
the test set with its weight matrices as ``jax.experimental.sparse.BCOO`` arrays next to the
dense masked model, and writes what it measured to ``<workdir>/sparse_model.json``. --nocheck
skips the test set (no data needed).

This file only parses flags and prints; the work is snip_jax.export.export_workdir and
snip_jax.export.check_on.
"""

import logging
import os
import sys

from absl import app, flags

from report import size_text
from snip_jax import checkpoint, data, export, files, train

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (of experiments/train.py).")
_OUTPUT = flags.DEFINE_string(
  "output", None, "The file to write (default: <workdir>/sparse_model.npz)."
)
_CHECK = flags.DEFINE_bool(
  "check", True, "Run the export sparsely and the dense masked model on the test set."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1000, "Batch size of the test-set check.")
flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)
  try:
    train.check_is_run(_WORKDIR.value)
    with train.lock_workdir(_WORKDIR.value):  # For the export, the check and the report.
      export_and_check()
  except data.DataNotFoundError as e:
    raise SystemExit(f"error: {e} (or pass --nocheck to skip the test-set check)") from None
  except (ValueError, OSError, files.LockedError) as e:
    raise SystemExit(f"error: {e}") from None


def export_and_check() -> None:
  """Exports, prints, checks on the test set (unless --nocheck) and writes the report."""
  run, path, info = export.export_workdir(_WORKDIR.value, _OUTPUT.value, lock=False)
  dense_bytes = export.tree_bytes(run.params)
  sparse_bytes = export.tree_bytes(export.load_sparse(path).params)
  newest = os.path.join(_WORKDIR.value, checkpoint.CHECKPOINT_DIR, str(run.step))
  record = {
    "export": path,
    "step": run.step,
    "finished": run.finished,
    "kept": info["kept"],
    "prunable": info["prunable"],
    "file_bytes": info["file_bytes"],
    "checkpoint_bytes": export.disk_bytes(newest),
    "dense_params_bytes": dense_bytes,
    "sparse_params_bytes": sparse_bytes,
    "test": None,
  }
  which = "the end of the run" if run.finished else "the run is not finished"
  print(
    f"Exported step {run.step} ({which}) to {path}: {info['kept']:,} of "
    f"{info['prunable']:,} prunable weights kept.\n"
    f"  file {size_text(info['file_bytes'])}; the run's checkpoint "
    f"{size_text(record['checkpoint_bytes'])}; the dense params {size_text(dense_bytes)} "
    f"(float32) -> the file is {info['file_bytes'] / dense_bytes:.1%} of them.\n"
    f"  params in memory: {size_text(sparse_bytes)} with BCOO weight matrices, "
    f"{size_text(dense_bytes)} dense.\n"
    "  Read back: the dense params equal the checkpoint's masked params bit for bit."
  )
  if _CHECK.value:
    config = run.config
    splits, _ = data.load_dataset(config.dataset, config.data_dir, config.source_dir)
    test = export.check_on(run, path, splits["test"], _BATCH_SIZE.value)
    record["test"] = test
    print(
      f"Test set ({test['examples']:,} examples): accuracy {test['sparse_accuracy']:.4f} "
      f"sparse (BCOO), {test['dense_accuracy']:.4f} dense masked; "
      f"{test['predictions_differ']} predictions differ; largest logit difference "
      f"{test['max_abs_diff']:.2g} (largest logit {test['max_abs_logit']:.3g})."
    )
  report = os.path.splitext(path)[0] + ".json"
  files.write_json(report, record)
  print(f"Wrote {report}.")


if __name__ == "__main__":
  sys.exit(app.run(main))
