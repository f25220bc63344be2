"""Random labels (the paper's memorisation experiment): can the pruned network fit noise?

  python experiments/random_labels.py          # 5 settings x 3 seeds x 2 datasets (RESULTS.md)
  python experiments/random_labels.py --quick  # plumbing check on a tiny budget (CI)

LeNet-300-100 on the first 10,000 training images of Fashion-MNIST and of MNIST (the paper's
setting), dense and SNIP-pruned (98%), each trained on the true labels and on labels shuffled
by a fixed permutation, plus the dense
network on shuffled labels with weight decay (settings: ``studies/random_labels.py``).
Writes ``results/random_labels/runs.jsonl``, ``random_labels.csv`` (final training loss and
accuracy of each setting, mean and std over seeds) and ``random_labels.png`` (training loss vs
iterations).

This file only parses flags; the experiment is ``studies/random_labels.py``.
"""

from absl import app

import runs
from studies import random_labels


def main(argv):
  del argv
  out = runs.run_flagged("random_labels", random_labels.make_runs)
  rows = random_labels.write_outputs(out, runs.read_records(out))
  for r in rows:
    print(f"{r['setting']:34s} final training loss {r['final_train_loss_mean']:.4f}")


if __name__ == "__main__":
  runs.define_flags("random_labels")
  app.run(main)
