"""The paper's MNIST experiments on the full MNIST: recipes, Tables 2, 3 and 4, the |D| study.

  python experiments/paper_mnist.py --workers 2                   # every study (long: RESULTS.md)
  python experiments/paper_mnist.py --studies recipe,table2       # some of them
  python experiments/paper_mnist.py --models lenet300             # one network's runs
  python experiments/paper_mnist.py --quick                       # plumbing check (CI)

Needs MNIST prepared (``scripts/setup.sh`` fetches it; see README "Data, offline"). The studies
(``studies/paper_mnist.py``): ``recipe`` (the paper's text vs its authors' code, LeNet-300-100
and LeNet-5-Caffe, dense and SNIP), ``table2`` (the LeNets, dense, SNIP and random pruning),
``table3`` (LSTM-s/b, GRU-s/b at 95%), ``table4`` (four initialisations at 90%, Adam) and
``dataset_size`` (|D| = 1 to 10,000, LeNet-300-100 at 90%, Adam), ``probes`` (a change to a
reported row's recipe each, where it misses the paper or the recipe departs from the paper's
text, and the ablations' rows at their first budget, 20 epochs at a constant rate) and
``stability`` (one epoch of the dense LeNet-5-Caffe at the authors' code's learning
rate from each draw of its init, 20 seeds: how often its loss becomes NaN). Finished runs are
recorded in ``results/paper_mnist/runs.jsonl`` and skipped on a re-run, so a long sweep is spread
over as many invocations as it takes; the script then writes
``results/paper_mnist/paper_mnist.csv``.

This file only parses flags; the experiment is ``studies/paper_mnist.py``.
"""

from absl import app, flags

import runs
from studies import paper_mnist

FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = runs.out_dir("paper_mnist")
  seeds, rnn_seeds = (1, 1) if FLAGS.quick else (FLAGS.seeds, FLAGS.rnn_seeds)
  specs = paper_mnist.make_runs(
    FLAGS.studies,
    seeds,
    rnn_seeds,
    quick=FLAGS.quick,
    models=FLAGS.models,
    stability_seeds=1 if FLAGS.quick else paper_mnist.STABILITY_SEEDS,
  )
  runs.run_all(specs, out, workers=FLAGS.workers)
  for r in paper_mnist.write_outputs(out, runs.read_records(out)):
    paper = r["paper_test_error_pct"]
    print(
      f"{r['model']:9s} {r['recipe']:28s} {r['criterion']:7s} {r['sparsity']:<5} "
      f"test error {100 * r['test_error_mean']:.2f} ± {100 * r['test_error_std']:.2f}% "
      f"(n={r['n']}, diverged {r['diverged_runs']})"
      + (f"; paper {paper}%: {r['verdict']}" if paper is not None else "")
    )


if __name__ == "__main__":
  runs.define_flags("paper_mnist")
  flags.FLAGS.set_default("seeds", 5)
  flags.DEFINE_integer("rnn_seeds", 3, "Seeds 0..n-1 per RNN setting.")
  flags.DEFINE_list("studies", list(paper_mnist.STUDIES), "Which studies to run.")
  flags.DEFINE_list("models", None, "Only these networks' runs (default: every network's).")
  app.run(main)
