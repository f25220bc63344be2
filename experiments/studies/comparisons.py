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

The recipes (:data:`RECIPES`) are the networks' reported MNIST recipes of
``studies/paper_mnist.py`` with the paper's schedule compressed to the budget: the learning
rate decays by 0.1 every :data:`DECAY_EVERY_STEPS` steps, at the same fractions of training as
the paper's every 25,000 of 100 epochs (54,000 steps). LeNet-300-100 trains with the paper's
text (SGD, momentum 0.9, learning rate 0.1, weight decay 5e-4), LeNet-5-Caffe with its authors'
code at that schedule (plain SGD at 0.1, LeCun init, biases pruned), here without the code's
re-initialisation after pruning, so that SNIP trains the weights it scored and ``snip_reinit`` is
a check of that. Without the decay a 20-epoch run would end in the noise of a learning rate of
0.1, not converged.
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
#: The paper's decay period (25,000 steps of 100 epochs) scaled to the budget.
DECAY_EVERY_STEPS = round(recipes.PAPER_TEXT["lr_decay_every_steps"] * BUDGET_EPOCHS / 100)
_SCHEDULE = {"num_epochs": BUDGET_EPOCHS, "lr_decay_every_steps": DECAY_EVERY_STEPS}
RECIPES = {
  "lenet300": {**recipes.PAPER_TEXT, **_SCHEDULE},
  "lenet5": {**recipes.AUTHORS_CODE_TEXT_SCHEDULE, "reinit_after_pruning": False, **_SCHEDULE},
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
#: Each method in a few words, for the report's tables.
METHOD_NAMES = {
  "snip": "SNIP at initialisation",
  "snip_shuffle": "SNIP's mask shuffled within each layer",
  "snip_layer_random": "random with SNIP's per-layer counts",
  "snip_invert": "the connections SNIP scores lowest",
  "snip_reinit": "SNIP's mask on a fresh initialisation",
  "random": "random at initialisation",
  "magnitude_after": "magnitude pruning after training, one shot",
  "magnitude_iterative": "magnitude pruning after training, iterative",
  "lottery_ticket": "lottery ticket (iterative, rewound to the initialisation)",
  "gmp": "gradual magnitude pruning",
  "set": "SET from SNIP's mask",
  "rigl": "RigL from SNIP's mask",
}
#: The paper's Table 1 (Lee et al. 2019; MNIST): the methods that prune a trained network, each
#: at its own sparsity and with its own training. Name, criterion, and per network (sparsity,
#: test error), in percent. Its SNIP rows are :data:`studies.paper_mnist.PAPER_TABLE2`'s.
PAPER_TABLE1 = (
  ("LWC (Han et al. 2015)", "magnitude", {"lenet300": (91.7, 1.6), "lenet5": (91.7, 0.8)}),
  ("DNS (Guo et al. 2016)", "magnitude", {"lenet300": (98.2, 2.0), "lenet5": (99.1, 0.9)}),
  (
    "LC (Carreira-Perpiñán & Idelbayev 2018)",
    "magnitude",
    {"lenet300": (99.0, 3.2), "lenet5": (99.0, 1.1)},
  ),
  ("SWS (Ullrich et al. 2017)", "Bayesian", {"lenet300": (95.6, 1.9), "lenet5": (99.5, 1.0)}),
  ("SVD (Molchanov et al. 2017)", "Bayesian", {"lenet300": (98.5, 1.9), "lenet5": (99.6, 0.8)}),
  ("OBD (LeCun et al. 1990)", "Hessian", {"lenet300": (92.0, 2.0), "lenet5": (92.0, 2.7)}),
  ("L-OBS (Dong et al. 2017)", "Hessian", {"lenet300": (98.5, 2.0), "lenet5": (99.0, 2.1)}),
)
#: Ours beside a Table 1 row of the magnitude family: iterative magnitude pruning after training
#: (Han et al.'s procedure) at the measured sparsity nearest the row's.
PAPER_COUNTERPART = "magnitude_iterative"


def nearest_sparsity(percent: float, sparsities=SPARSITIES) -> float:
  """The sparsity of ``sparsities`` nearest ``percent`` (in percent): where ours stands beside a
  Table 1 row measured at its own sparsity."""
  return min(sparsities, key=lambda s: abs(100 * s - percent))


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
  for kind, names, known in (("network", models, MODELS), ("dataset", datasets, DATASETS)):
    for name in names:
      if name not in known:
        raise ValueError(f"Unknown {kind} {name!r}; choose from {known}.")
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
        # Runs whose mask cut some outputs (classes) off the input (the summary's count).
        "cut_runs": sum(1 for r in recs if (r["summary"] or {}).get("num_cut_outputs")),
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


def figure(rows, sparsity: float, path: Path) -> None:
  """Test error against total training cost (epochs, pretraining included) at ``sparsity``,
  one panel per network and dataset (the dense error a line), the methods' legend beside them:
  the trade-off a user chooses on."""
  import matplotlib.ticker

  plt = runs.pyplot()
  colors = plt.get_cmap("tab20")
  panels = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
  fig, axes = plt.subplots(
    1,
    len(panels) + 1,
    figsize=(5.2 * len(panels) + 2.2, 4.4),
    gridspec_kw={"width_ratios": [1.0] * len(panels) + [0.4]},
    squeeze=False,
  )
  legend = {}  # One entry per method, in METHODS' order.
  for ax, (model, dataset) in zip(axes[0][:-1], panels, strict=True):  # The last: the key.
    mine = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
    title = f"{model}, {dataset}, {100 * sparsity:g}% sparse (n={mine[0]['n']})"
    for r in mine:
      if r["method"] == DENSE:
        m = 100 * r["test_error_mean"]
        legend["dense"] = ax.axhline(m, color="black", lw=1.0)
        title += f"\ndense: {m:.2f}%"
        continue
      if r["sparsity"] != sparsity:
        continue
      index = METHODS.index(r["method"])
      legend[r["method"]] = ax.errorbar(
        r["cost_epochs"],
        100 * r["test_error_mean"],
        yerr=100 * r["test_error_std"],
        marker="osD^v<>ph*XP"[index % 12],
        ms=6,
        color=colors(index % 20),
        capsize=3,
        linestyle="none",
      )
    ax.set_xlabel("training epochs, pretraining included")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ticks = [t for t in (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 90) if low <= t <= high]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
  key = axes[0][-1]
  key.axis("off")
  order = [name for name in ("dense", *METHODS) if name in legend]
  if order:
    key.legend([legend[n] for n in order], order, loc="center left", fontsize=8, frameon=False)
  runs.save_figure(fig, path)


def write_outputs(out: str | Path, records) -> list[dict]:
  """Writes ``comparisons.csv`` (the rows of :func:`aggregate`) and, per sparsity,
  ``comparisons_<sparsity>.png`` (:func:`figure`); returns the rows."""
  rows = aggregate(records)
  if rows:
    runs.write_csv(rows, Path(out) / "comparisons.csv")
    for sparsity in sorted({r["sparsity"] for r in rows if r["method"] != DENSE}):
      figure(rows, sparsity, Path(out) / f"comparisons_{sparsity:g}.png")
  return rows
