"""When is SNIP the right choice? Every method at the same sparsity, budget and recipe.

  python experiments/comparisons.py --workers 2                  # everything (long: RESULTS.md)
  python experiments/comparisons.py --models lenet300 --datasets fashion_mnist   # a part
  python experiments/comparisons.py --quick                      # plumbing check (CI)

SNIP, its four sanity checks, random pruning, magnitude pruning after training (one shot and
iterative), lottery tickets, gradual magnitude pruning, SET and RigL on LeNet-300-100 and
LeNet-5-Caffe, MNIST and Fashion-MNIST, at 90, 95, 98 and 99% (settings and budget:
``studies/comparisons.py``). Finished runs are recorded in ``results/comparisons/runs.jsonl``
and skipped on a re-run, so the sweep may be spread over many invocations; runs pruned from a
trained network wait for it. Writes ``results/comparisons/comparisons.csv``.

This file only parses flags; the experiment is ``studies/comparisons.py``.
"""

from absl import app, flags

import runs
from studies import comparisons

FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = runs.out_dir("comparisons")
  models, datasets = FLAGS.models, FLAGS.datasets
  if FLAGS.quick:
    models, datasets = ["lenet300"], ["fashion_mnist"]
  specs = comparisons.make_runs(
    1 if FLAGS.quick else FLAGS.seeds, FLAGS.quick, models=models, datasets=datasets
  )
  runs.run_all(specs, out, workers=FLAGS.workers)
  for r in comparisons.write_outputs(out, runs.read_records(out)):
    print(
      f"{r['model']:9s} {r['dataset']:14s} {r['method']:20s} {r['sparsity']:<5} "
      f"test error {100 * r['test_error_mean']:.2f} ± {100 * r['test_error_std']:.2f}% "
      f"(n={r['n']}; {r['cost_epochs']:.0f} epochs of training)"
    )


if __name__ == "__main__":
  runs.define_flags("comparisons")
  flags.DEFINE_list("models", list(comparisons.MODELS), "Which networks.")
  flags.DEFINE_list("datasets", list(comparisons.DATASETS), "Which datasets.")
  app.run(main)
