"""The paper's ablations on LeNet-300-100: the initialisation, and the size of the scoring batch.

  python experiments/ablations.py              # 27 runs (cost: RESULTS.md)
  python experiments/ablations.py --quick      # plumbing check on a tiny budget (CI)

Both at a sparsity of 90% on Fashion-MNIST, trained as the paper's ablations are (Adam,
learning rate 1e-3, no weight decay, batch 100) for 20 epochs (10,800 steps), 3 seeds:

* initialisation: SNIP scores (and training starts from) random normal (RN, stddev 0.1),
  truncated normal (TN, stddev 0.1), variance scaling Xavier (VS-X) or He (VS-H, the default);
* scoring batch: SNIP scores one batch of |D| = 1, 10, 100, 1,000 or 10,000 training examples
  (VS-H init).

The VS-H run of the first study is the |D| = 100 run of the second (one run, in both tables);
the dense network trained the same way is the reference. Writes
``results/ablations/runs.jsonl`` and ``ablations.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app

sys.path.insert(0, str(Path(__file__).parent))
import runs as runs_lib

SPARSITY = 0.9
RECIPE = {
  "optimizer": "adam",
  "learning_rate": 1e-3,
  "weight_decay": 0.0,
  "num_epochs": 20,
  "lr_decay_every_steps": 10**9,  # Constant learning rate.
}
QUICK = {**RECIPE, "num_epochs": 1, "train_examples": 1_000}
INITS = {"RN": "normal", "TN": "truncated_normal", "VS-X": "vs_x", "VS-H": "vs_h"}
BATCHES = (1, 10, 100, 1_000, 10_000)
QUICK_BATCHES = (1, 100)


def make_runs(seeds: int, quick: bool = False) -> list[runs_lib.Run]:
  recipe = QUICK if quick else RECIPE
  settings = [("dense", {"sparsity": 0.0}, {"study": "reference"})]
  for label, init in INITS.items():
    if init != "vs_h" and not (quick and label != "RN"):
      settings.append((f"init_{init}", {"init": init}, {"study": "init", "init": label}))
  for size in QUICK_BATCHES if quick else BATCHES:
    tags = {"study": "batch", "score_examples": size}
    if size == 100:  # The default: also the VS-H row of the initialisation study.
      tags = {"study": "both", "init": "VS-H", "score_examples": size}
    settings.append((f"batch_{size}", {"score_batch_size": size}, tags))
  result = []
  for seed in range(seeds):
    for name, overrides, tags in settings:
      over = {**recipe, "sparsity": SPARSITY, **overrides, "seed": seed}
      result.append(
        runs_lib.Run(
          name=f"{name}/seed{seed}",
          config="lenet300_fashion_mnist",
          overrides=over,
          tags={**tags, "seed": seed},
        )
      )
  return result


def aggregate(records) -> list[dict]:
  """One row per setting: test error mean/std over seeds and the gap to the dense network."""
  dense = runs_lib.Stat.of(
    runs_lib.test_error(r) for r in records if r["tags"]["study"] == "reference"
  )
  rows = []
  for name, recs in runs_lib.group(records, lambda r: r["name"].split("/")[0]).items():
    err = runs_lib.Stat.of(runs_lib.test_error(r) for r in recs)
    tags = recs[0]["tags"]
    rows.append(
      {
        "setting": name,
        "study": tags["study"],
        "init": tags.get("init", "VS-H" if tags["study"] != "reference" else ""),
        "score_examples": tags.get("score_examples", 100),
        "n": err.n,
        "test_error_mean": err.mean,
        "test_error_std": err.std,
        "gap_to_dense": err.mean - dense.mean,
        "epochs": recs[0]["summary"]["epochs"],
        "train_examples": recs[0]["summary"]["train_examples"],
      }
    )
  return rows


def write_outputs(out: Path, records) -> list[dict]:
  """``ablations.csv`` from ``records`` (those of ``<out>/runs.jsonl``); returns its rows."""
  rows = aggregate(records)
  if rows:
    runs_lib.write_csv(rows, out / "ablations.csv")
  return rows


def main(argv):
  del argv
  out = runs_lib.run_flagged("ablations", make_runs)
  for r in write_outputs(out, runs_lib.read_records(out)):
    print(
      f"{r['setting']:16s} test error {100 * r['test_error_mean']:.2f} ± "
      f"{100 * r['test_error_std']:.2f}% (n={r['n']})"
    )


if __name__ == "__main__":
  runs_lib.define_flags("ablations")
  app.run(main)
