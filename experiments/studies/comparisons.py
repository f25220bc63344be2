"""When is SNIP the right choice? SNIP against its sanity checks, pruning after training, gradual
magnitude pruning, lottery tickets and dynamic sparse training, at the same sparsity.

What ``experiments/comparisons.py`` trains (:func:`make_runs`) and how its runs aggregate
(:func:`aggregate`). Every method trains the same network with the same recipe for the same
number of epochs (:data:`BUDGET_EPOCHS`); the methods that prune a trained network train it
first (dense, the same recipe and budget), and that pretraining counts in their cost:

==========================  ==================================================================
``snip``                    SNIP at initialisation (the paper)
``random``                  uniformly random at initialisation
``snip_shuffle``            SNIP's mask shuffled within each layer (sanity check)
``snip_layer_random``       random with SNIP's per-layer counts (sanity check)
``snip_invert``             the connections SNIP scores lowest (sanity check)
``snip_reinit``             SNIP's mask on a fresh initialisation (sanity check)
``magnitude_after``         the dense network trained, pruned by magnitude, retrained at a tenth
                            of the learning rate (Han et al. 2015, one shot)
``magnitude_iterative``     the same, each sparsity pruned from the one before (iterative)
``lottery_ticket``          iterative magnitude pruning, each round rewound to the
                            initialisation (Frankle & Carbin 2019), through the sparsities in
                            order
``gmp``                     gradual magnitude pruning from dense during training (Zhu & Gupta
                            2017): from epoch ``B/10`` to ``3B/4``, every 100 steps
``set``, ``rigl``           SNIP's mask, then SET / RigL updates every 100 steps until ``3B/4``
                            (drop fraction 0.3, cosine decay)
==========================  ==================================================================

The recipes (:data:`RECIPES`) are the networks' MNIST recipes of ``studies/paper_mnist.py`` at
this budget: LeNet-300-100 the paper's text (SGD, momentum 0.9, learning rate 0.1, weight decay
5e-4: no decay within 20 epochs), LeNet-5-Caffe its authors' code (plain SGD at 0.1, LeCun
init, biases pruned), here without the code's re-initialisation after pruning, so that SNIP
trains the weights it scored and ``snip_reinit`` is a check of that.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import runs
from snip_jax.train import recipes

MODELS = ("lenet300", "lenet5")
DATASETS = ("mnist", "fashion_mnist")
SPARSITIES = (0.9, 0.95, 0.98, 0.99)
#: The epochs every method trains (the pruned-after-training ones: after as many dense).
BUDGET_EPOCHS = 20
RECIPES = {
  "lenet300": {**recipes.PAPER_TEXT, "num_epochs": BUDGET_EPOCHS},
  "lenet5": {**recipes.AUTHORS_CODE, "reinit_after_pruning": False, "num_epochs": BUDGET_EPOCHS},
}
#: Retraining after magnitude pruning runs at the recipe's learning rate divided by this.
RETRAIN_LR_DIVISOR = 10
SANITY_CHECKS = ("shuffle", "layer_random", "invert", "reinit")
#: Every method, in the order of the tables.
METHODS = (
  "snip",
  *(f"snip_{check}" for check in SANITY_CHECKS),
  "random",
  "magnitude_after",
  "magnitude_iterative",
  "lottery_ticket",
  "gmp",
  "set",
  "rigl",
)
DENSE = "dense"
#: --quick: one network and dataset (``experiments/comparisons.py``), one sparsity, a slice of
#: the data, one epoch, and mask updates every 2 steps so that the dynamic methods move.
QUICK = {"num_epochs": 1, "train_examples": 500}
QUICK_SPARSITIES = (0.9,)


def dynamic_schedule(method: str, epochs: int, quick: bool) -> dict:
  """The mask-update fields of a dynamic method trained ``epochs`` epochs."""
  fields = {
    "dynamic": method,
    "mask_update_every": 2 if quick else 100,
    "mask_update_end_epoch": max(1, 3 * epochs // 4),
  }
  if method == "gmp":
    fields["mask_update_begin_epoch"] = epochs // 10
  return fields


def run_name(model, dataset, method, sparsity, seed) -> str:
  return f"{model}/{dataset}/{method}/{sparsity}/seed{seed}"


def _run(model, dataset, method, sparsity, seed, overrides, source=None) -> runs.Run:
  tags = {"model": model, "dataset": dataset, "method": method, "sparsity": sparsity}
  return runs.Run(
    name=run_name(model, dataset, method, sparsity, seed),
    config=f"{model}_{dataset}",
    overrides={**overrides, "sparsity": sparsity, "seed": seed},
    tags={**tags, "seed": seed},
    source=None if source is None else run_name(model, dataset, *source, seed),
  )


def _setting_runs(model, dataset, seed, quick) -> list[runs.Run]:
  """One network's runs on one dataset for one seed: the dense run, then every method."""
  recipe = {**RECIPES[model], **(QUICK if quick else {})}
  retrain = {**recipe, "learning_rate": recipe["learning_rate"] / RETRAIN_LR_DIVISOR}
  result = [_run(model, dataset, DENSE, 0.0, seed, {**recipe, "keep_checkpoint_step": 0})]
  # The chains: each sparsity pruned from the run of the one before (the first from dense).
  previous = {"magnitude_iterative": (DENSE, 0.0), "lottery_ticket": (DENSE, 0.0)}
  for sparsity in QUICK_SPARSITIES if quick else SPARSITIES:
    snip = {**recipe, "criterion": "snip"}
    magnitude = {"criterion": "magnitude"}
    ticket = {**recipe, **magnitude, "rewind_to_step": 0, "keep_checkpoint_step": 0}
    result += [
      _run(model, dataset, "snip", sparsity, seed, snip),
      *(
        _run(model, dataset, f"snip_{check}", sparsity, seed, {**snip, "sanity_check": check})
        for check in SANITY_CHECKS
      ),
      _run(model, dataset, "random", sparsity, seed, {**recipe, "criterion": "random"}),
      _run(
        model, dataset, "magnitude_after", sparsity, seed, {**retrain, **magnitude}, (DENSE, 0.0)
      ),
      _run(
        model,
        dataset,
        "magnitude_iterative",
        sparsity,
        seed,
        {**retrain, **magnitude},
        previous["magnitude_iterative"],
      ),
      _run(model, dataset, "lottery_ticket", sparsity, seed, ticket, previous["lottery_ticket"]),
      *(
        _run(
          model,
          dataset,
          method,
          sparsity,
          seed,
          {**snip, **dynamic_schedule(method, recipe["num_epochs"], quick)},
        )
        for method in ("gmp", "set", "rigl")
      ),
    ]
    previous = {method: (method, sparsity) for method in previous}
  return result


def make_runs(
  seeds: int,
  quick: bool = False,
  models=MODELS,
  datasets=DATASETS,
) -> list[runs.Run]:
  """Every method at every sparsity, per network, dataset and seed (seed-major), after the
  dense run each shares (the pretraining of the methods that prune a trained network, and the
  reference)."""
  return [
    run
    for seed in range(seeds)
    for model in models
    for dataset in datasets
    for run in _setting_runs(model, dataset, seed, quick)
  ]


def test_error(record) -> float:
  """A run's test error; 1 (chance or worse) for one whose loss became NaN."""
  return 1.0 if record.get("diverged") else runs.test_error(record)


def cost_epochs(record) -> float:
  """The epochs of training behind a run's result: its own and its sources' (pretraining)."""
  summary = record["summary"] or {}
  per_epoch = max(1, summary.get("steps", 0) // max(1, record["overrides"]["num_epochs"]))
  return (summary.get("steps", 0) + summary.get("pretrain_steps", 0)) / per_epoch


def aggregate(records) -> list[dict]:
  """One row per (model, dataset, method, sparsity): test error mean and std over seeds, and
  the training cost (epochs and measured seconds, pretraining included)."""
  groups = runs.group(
    records,
    lambda r: tuple(r["tags"][k] for k in ("model", "dataset", "method", "sparsity")),
  )
  rows = []
  for (model, dataset, method, sparsity), recs in sorted(groups.items(), key=_order):
    err = runs.Stat.of(test_error(r) for r in recs)
    seconds = [
      (r["summary"] or {}).get("train_seconds", math.nan)
      + (r["summary"] or {}).get("pretrain_seconds", 0.0)
      for r in recs
    ]
    rows.append(
      {
        "model": model,
        "dataset": dataset,
        "method": method,
        "sparsity": sparsity,
        "n": err.n,
        "diverged_runs": sum(1 for r in recs if r.get("diverged")),
        "test_error_mean": err.mean,
        "test_error_std": err.std,
        "cost_epochs": float(np.mean([cost_epochs(r) for r in recs])),
        "cost_seconds_mean": float(np.mean(seconds)),
      }
    )
  return rows


def _order(item):
  (model, dataset, method, sparsity), _ = item
  position = -1 if method == DENSE else METHODS.index(method)
  return (MODELS.index(model), DATASETS.index(dataset), sparsity, position)


def write_outputs(out: str | Path, records) -> list[dict]:
  """Writes ``comparisons.csv`` (the rows of :func:`aggregate`); returns the rows."""
  rows = aggregate(records)
  runs.write_csv(rows, Path(out) / "comparisons.csv")
  return rows
