"""Sparse export: what the compact file saves on disk and in memory; what sparse inference costs.

  python experiments/sparse_export.py --workers 2   # 14 runs, then the measurements (RESULTS.md)
  python experiments/sparse_export.py --quick       # plumbing check on a tiny budget (CI)

Trains LeNet-300-100 and LeNet-5-Caffe with SNIP on Fashion-MNIST at seven sparsities (the
sweep's CPU budgets, seed 0; ``results/sparse_export/runs.jsonl``), exports every run, and
measures the export against the dense masked params: sizes on disk and in memory, the test set
run both ways, and the inference speed of both side by side (what is measured, and how:
``studies/sparse_export.py``).

Writes ``results/sparse_export/sparse_export.json`` (everything, with the machine) and
``sparse_export.csv`` (one row per model and sparsity). The runs' workdirs (``runs/``) are not
committed: a run whose workdir is missing is trained again (deterministic: the same mask and
weights on the same machine).

This file only parses flags; the experiment is ``studies/sparse_export.py``.
"""

import logging

from absl import app, flags

import runs
from studies import sparse_export

FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.WARNING)  # Orbax logs every save at INFO.
  out = runs.out_dir("sparse_export")
  specs = sparse_export.make_runs(FLAGS.quick)
  runs.run_all(specs, out, workers=FLAGS.workers)
  rounds = sparse_export.QUICK_ROUNDS if FLAGS.quick else sparse_export.ROUNDS
  command = "python experiments/sparse_export.py" + (" --quick" if FLAGS.quick else "")
  sparse_export.measure_all(specs, out, rounds, command)
  print(f"wrote {out / 'sparse_export.json'} and {out / 'sparse_export.csv'}")


if __name__ == "__main__":
  runs.define_flags("sparse_export", trains=False)
  flags.DEFINE_integer("workers", 1, "Runs trained at a time (worker processes).")
  app.run(main)
