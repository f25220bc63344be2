"""The paper's ablations on LeNet-300-100: the initialisation, and the size of the scoring batch.

What ``experiments/ablations.py`` trains (:func:`make_runs`) and how its runs aggregate into
``ablations.csv`` (:func:`aggregate`). Both studies at a sparsity of 90% on Fashion-MNIST,
trained as the paper's ablations are (Adam, learning rate 1e-3, no weight decay, batch 100) for
20 epochs (``RECIPE``):

* initialisation: SNIP scores (and training starts from) random normal (RN, stddev 0.1),
  truncated normal (TN, stddev 0.1), variance scaling Xavier (VS-X) or He (VS-H, the default);
* scoring batch: SNIP scores one batch of |D| = 1, 10, 100, 1,000 or 10,000 training examples
  (VS-H init).

The VS-H run of the first study is the |D| = 100 run of the second (one run, in both tables);
the dense network trained the same way is the reference.
"""

from __future__ import annotations

from pathlib import Path

import runs
from studies import names

SPARSITY = 0.9
RECIPE = {
  "optimizer": "adam",
  "learning_rate": 1e-3,
  "weight_decay": 0.0,
  "num_epochs": 20,
  "lr_decay_every_steps": 10**9,  # Constant learning rate.
}
QUICK = {**RECIPE, "num_epochs": 1, "train_examples": 1_000}
BATCHES = (1, 10, 100, 1_000, 10_000)
QUICK_BATCHES = (1, 100)


def make_runs(seeds: int, quick: bool = False) -> list[runs.Run]:
  """Dense, each init of the first study and each scoring batch of the second, per seed (with
  ``quick``: one init besides VS-H and two batches, on a tiny budget)."""
  recipe = QUICK if quick else RECIPE
  settings = [("dense", {"sparsity": 0.0}, {"study": "reference"})]
  for init, label in names.INITS.items():
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
        runs.Run(
          name=f"{name}/seed{seed}",
          config="lenet300_fashion_mnist",
          overrides=over,
          tags={**tags, "seed": seed},
        )
      )
  return result


def aggregate(records) -> list[dict]:
  """One row per setting: test error mean/std over seeds and the gap to the dense network."""
  dense = runs.Stat.of(runs.test_error(r) for r in records if r["tags"]["study"] == "reference")
  rows = []
  for name, recs in runs.group(records, lambda r: r["name"].split("/")[0]).items():
    err = runs.Stat.of(runs.test_error(r) for r in recs)
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
    runs.write_csv(rows, out / "ablations.csv")
  return rows
