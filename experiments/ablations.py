"""The paper's ablations on LeNet-300-100: the initialisation, and the size of the scoring batch.

  python experiments/ablations.py              # 27 runs (cost: RESULTS.md)
  python experiments/ablations.py --quick      # plumbing check on a tiny budget (CI)

Both at a sparsity of 90% on Fashion-MNIST, trained as the paper's ablations are (Adam,
learning rate 1e-3, no weight decay, batch 100) for 20 epochs, 3 seeds: the initialisation
SNIP scores (RN, TN, VS-X, VS-H) and the size |D| of its scoring batch (1 to 10,000; settings:
``studies/ablations.py``). Writes ``results/ablations/runs.jsonl`` and ``ablations.csv``.

This file only parses flags; the experiment is ``studies/ablations.py``.
"""

from absl import app

import runs
from studies import ablations


def main(argv):
  del argv
  out = runs.run_flagged("ablations", ablations.make_runs)
  for r in ablations.write_outputs(out, runs.read_records(out)):
    print(
      f"{r['setting']:16s} test error {100 * r['test_error_mean']:.2f} ± "
      f"{100 * r['test_error_std']:.2f}% (n={r['n']})"
    )


if __name__ == "__main__":
  runs.define_flags("ablations")
  app.run(main)
