"""Random labels (the paper's memorisation experiment): can the pruned network fit noise?

What ``experiments/random_labels.py`` trains (:func:`make_runs`), how its runs aggregate into
``random_labels.csv`` (:func:`aggregate`) and its figure (training loss vs iterations).
LeNet-300-100 on the first 10,000 training images of Fashion-MNIST and of MNIST (the paper's
setting), dense and SNIP-pruned (98%), each trained on the true labels and on labels shuffled
by a fixed permutation
(``config.random_labels``), plus the dense network on shuffled labels with weight decay (the
paper's figure has such a run too: L2 alone does not stop a dense network memorising). SGD with
momentum 0.9 at a constant learning rate of 0.01, batch 100, 100 epochs (10,000 steps), no
weight decay unless the run says so (``RECIPE``); SNIP scores on a batch of the (shuffled)
training set it will fit.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import runs
from studies import names

SPARSITY = 0.98
#: The datasets, each with its own runs (Fashion-MNIST's runs keep the names they had before
#: MNIST joined).
DATASETS = ("fashion_mnist", "mnist")
RECIPE = {
  "train_examples": 10_000,
  "num_epochs": 100,
  # With the paper's 0.1 not even the dense network fitted the shuffled labels in this budget
  # (a trial run); with 0.01 it does.
  "learning_rate": 0.01,
  "lr_decay_every_steps": 10**9,  # Constant learning rate.
  "weight_decay": 0.0,
}
QUICK = {**RECIPE, "train_examples": 500, "num_epochs": 2}
#: (name, sparsity, random labels, weight decay) of each setting.
SETTINGS = (
  ("dense, true labels", 0.0, False, 0.0),
  ("SNIP 98%, true labels", SPARSITY, False, 0.0),
  ("dense, random labels", 0.0, True, 0.0),
  ("dense + L2 5e-4, random labels", 0.0, True, 5e-4),
  ("SNIP 98%, random labels", SPARSITY, True, 0.0),
)


def make_runs(seeds: int, quick: bool = False, datasets=DATASETS) -> list[runs.Run]:
  """Every setting of ``SETTINGS`` per dataset and seed, on ``RECIPE``'s budget (``QUICK``'s
  with ``quick``)."""
  result = []
  for dataset, seed, (name, sparsity, random_labels, weight_decay) in itertools.product(
    datasets, range(seeds), SETTINGS
  ):
    overrides = {
      **(QUICK if quick else RECIPE),
      "sparsity": sparsity,
      "random_labels": random_labels,
      "weight_decay": weight_decay,
      "seed": seed,
    }
    slug = name.replace(" ", "").replace(",", "_").replace("%", "").replace("+", "_")
    prefix = "" if dataset == "fashion_mnist" else f"{dataset}/"
    result.append(
      runs.Run(
        name=f"{prefix}{slug}/seed{seed}",
        config=f"lenet300_{dataset}",
        overrides=overrides,
        tags={"setting": name, "seed": seed},
      )
    )
  return result


def dataset_of(record) -> str:
  return record["summary"]["dataset"]


def aggregate(records) -> list[dict]:
  """One row per dataset and setting: the final epoch's training loss and accuracy, mean/std
  over seeds."""
  rows = []
  key = lambda r: (dataset_of(r), r["tags"]["setting"])  # noqa: E731
  for (dataset, setting), recs in runs.group(records, key).items():
    loss = runs.Stat.of(r["metrics"][-1]["train_loss"] for r in recs)
    acc = runs.Stat.of(r["metrics"][-1]["train_accuracy"] for r in recs)
    rows.append(
      {
        "dataset": dataset,
        "setting": setting,
        "n": loss.n,
        "final_train_loss_mean": loss.mean,
        "final_train_loss_std": loss.std,
        "final_train_accuracy_mean": acc.mean,
        "final_train_accuracy_std": acc.std,
        "steps": recs[0]["summary"]["steps"],
        "train_examples": recs[0]["summary"]["train_examples"],
      }
    )
  return rows


def figure(records, path: Path) -> None:
  """Training loss (mean over seeds, band = min..max) vs iterations, one line per setting and
  one panel per dataset."""
  plt = runs.pyplot()

  by_dataset = runs.group(records, dataset_of)
  fig, axes = plt.subplots(
    1, len(by_dataset), figsize=(6.4 * len(by_dataset), 4.2), squeeze=False, sharey=True
  )
  for ax, (dataset, mine) in zip(axes[0], by_dataset.items(), strict=True):
    _panel(ax, dataset, mine)
  runs.save_figure(fig, path)


def _panel(ax, dataset: str, records) -> None:
  import numpy as np

  for setting, recs in runs.group(records, lambda r: r["tags"]["setting"]).items():
    steps_per_epoch = recs[0]["summary"]["steps"] // len(recs[0]["metrics"])
    losses = np.array([[m["train_loss"] for m in r["metrics"]] for r in recs])
    x = steps_per_epoch * np.arange(1, losses.shape[1] + 1)
    style = "--" if "random" in setting else "-"
    (line,) = ax.plot(x, losses.mean(0), style, label=f"{setting} (n={len(recs)})")
    ax.fill_between(x, losses.min(0), losses.max(0), color=line.get_color(), alpha=0.2)
  ax.set_xlabel("iterations")
  ax.set_ylabel("training loss (epoch mean)")
  ax.set_yscale("log")
  examples = records[0]["summary"]["train_examples"]
  title = f"LeNet-300-100, {names.DATASETS[dataset]} ({examples:,} examples)"
  ax.set_title(f"{title}: true vs shuffled labels", fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8)


def write_outputs(out: Path, records) -> list[dict]:
  """``random_labels.csv`` and the figure from ``records`` (those of ``<out>/runs.jsonl``);
  returns the aggregated rows."""
  rows = aggregate(records)
  if rows:
    runs.write_csv(rows, out / "random_labels.csv")
    figure(records, out / "random_labels.png")
  return rows
