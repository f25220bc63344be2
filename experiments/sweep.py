"""Sparsity sweep: dense vs SNIP vs the baselines at sparsities of 90-99%, several seeds.

  python experiments/sweep.py                 # the full sweep (126 runs; cost: RESULTS.md)
  python experiments/sweep.py --workers 2     # two runs at a time (~2x faster on 2 cores)
  python experiments/sweep.py --quick         # plumbing check on a tiny budget (CI)

LeNet-300-100 and LeNet-5-Caffe on Fashion-MNIST (``--dataset mnist`` where MNIST is prepared),
trained with the paper's recipe (SGD, momentum 0.9, lr 0.1 decayed x0.1, weight decay 5e-4,
batch 100) for a budget that fits a CPU: see ``studies.sweep.BUDGETS``. Every criterion of
``snip_jax.criteria`` prunes the same initialisation of a seed (one-shot SNIP, random,
magnitude, GraSP; SynFlow with its 100 rounds). Finished runs are recorded in
``results/sweep/runs.jsonl`` and skipped on a re-run; the script then writes
``results/sweep/sweep.csv`` (mean and std of test error per model, criterion and sparsity) and
one figure per dataset, ``results/sweep/sweep_<dataset>.png``.

This file only parses flags; the experiment is ``studies/sweep.py``.
"""

from absl import app, flags

import runs
from studies import sweep

FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = runs.out_dir("sweep")
  if FLAGS.quick:
    specs = sweep.make_runs(
      ["fashion_mnist"], ["lenet300", "lenet5"], ["snip", "random"], [0.98], 1, True
    )
  else:
    sparsities = [float(s) for s in FLAGS.sparsities]
    specs = sweep.make_runs(FLAGS.datasets, FLAGS.models, FLAGS.criteria, sparsities, FLAGS.seeds)
  runs.run_all(specs, out, workers=FLAGS.workers)
  rows = sweep.write_outputs(out, runs.read_records(out))
  print(f"wrote {out / 'sweep.csv'} ({len(rows)} rows) and the figures")


if __name__ == "__main__":
  runs.define_flags("sweep")
  flags.DEFINE_list("datasets", ["fashion_mnist"], "'fashion_mnist' and/or 'mnist'.")
  flags.DEFINE_list("models", ["lenet300", "lenet5"], "Models to sweep.")
  flags.DEFINE_list(
    "criteria", ["snip", "random", "magnitude", "grasp", "synflow"], "Pruning criteria."
  )
  flags.DEFINE_list("sparsities", ["0.9", "0.95", "0.98", "0.99"], "Sparsities.")
  app.run(main)
