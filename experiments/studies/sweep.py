"""The sparsity sweep: dense vs SNIP vs the baselines at sparsities of 90-99%, several seeds.

What ``experiments/sweep.py`` trains (:func:`make_runs`: LeNet-300-100 and LeNet-5-Caffe with the
paper's recipe, at a CPU budget per model, ``BUDGETS``), how its runs aggregate into
``sweep.csv`` (:func:`aggregate`), what they find against dense and random pruning
(:func:`findings`) and its figure, one per dataset.
"""

from __future__ import annotations

from pathlib import Path

import runs
from studies import names

#: The training budget per model on a CPU: epochs of the 54,000 training examples (540 steps of
#: batch 100 each) and the step decay, x0.1 every `lr_decay_every_steps` (the paper decays every
#: 25k steps of a longer run). LeNet-300-100 gets 30 epochs (16,200 steps, decayed at 7,500 and
#: 15,000); LeNet-5-Caffe, ~15x costlier per step on a CPU, 2 epochs (1,080 steps, decayed after
#: the first) at a learning rate of 0.01: at the paper's 0.1 the first runs here (seed 0) of
#: the dense network and of GraSP at 90% ended at chance level; at 0.01 both train.
BUDGETS = {
  "lenet300": {"num_epochs": 30, "lr_decay_every_steps": 7_500},
  "lenet5": {"num_epochs": 2, "lr_decay_every_steps": 540, "learning_rate": 0.01},
}
#: The headline setting is also trained at the full budget of the default config (100 epochs,
#: 54,000 steps, decayed every 25,000 as in the paper): LeNet-300-100 at 98%, dense, SNIP and
#: random pruning.
FULL = {"model": "lenet300", "sparsity": 0.98, "criteria": ("snip", "random")}
#: Appended to the model in the names of the :data:`FULL` runs.
FULL_SUFFIX = "-full"
#: A few steps on a slice of the data, for --quick (at the model's learning rate).
QUICK = {"num_epochs": 1, "lr_decay_every_steps": 1_000, "train_examples": 1_000}
#: The paper's numbers (Lee et al. 2019, Table 1; MNIST): test error of SNIP and of the dense
#: reference network.
PAPER = {"lenet300": (0.98, 0.024, 0.017), "lenet5": (0.99, 0.011, 0.009)}
DENSE = "dense"
#: Order (and colour) of the criteria in tables and figures.
ORDER = (DENSE, "snip", "random", "magnitude", "grasp", "synflow", "iterative_snip")


def ordered(criteria) -> list[str]:
  """``criteria`` in :data:`ORDER`, unknown ones last."""
  return sorted(set(criteria), key=lambda c: (ORDER.index(c) if c in ORDER else len(ORDER), c))


#: Test accuracy of a constant prediction on the 10 balanced classes of both datasets.
CHANCE = 0.1


def run_spec(dataset, model, criterion, sparsity, seed, budget, prefix="") -> runs.Run:
  """One run of the sweep: ``model`` on ``dataset`` pruned by ``criterion`` (or dense), with
  ``budget``'s config overrides."""
  overrides = {"seed": seed, **budget, "sparsity": sparsity}
  if criterion != DENSE:
    overrides["criterion"] = criterion
  tags = {"dataset": dataset, "model": model, "criterion": criterion, "sparsity": sparsity}
  return runs.Run(
    name=f"{dataset}/{model}{prefix}/{criterion}/{sparsity}/seed{seed}",
    config=f"{model}_{dataset}",
    overrides=overrides,
    tags={**tags, "seed": seed},
  )


def make_runs(datasets, models, criteria, sparsities, seeds, quick=False) -> list[runs.Run]:
  """Dense plus every criterion x sparsity, for each dataset, model and seed, at the model's
  CPU budget; then (not with ``quick``) the :data:`FULL` runs at the default config's budget."""
  result = []
  for dataset in datasets:
    for model in models:
      budget = {**BUDGETS[model], **QUICK} if quick else BUDGETS[model]
      for seed in range(seeds):
        settings = [(DENSE, 0.0)] + [(c, s) for s in sparsities for c in criteria]
        result += [run_spec(dataset, model, c, s, seed, budget) for c, s in settings]
  if not quick and FULL["model"] in models:
    for dataset in datasets:
      for seed in range(seeds):
        settings = [(DENSE, 0.0)] + [(c, FULL["sparsity"]) for c in FULL["criteria"]]
        result += [
          run_spec(dataset, FULL["model"], c, s, seed, {}, FULL_SUFFIX) for c, s in settings
        ]
  return result


def is_full(record) -> bool:
  """Whether ``record`` is one of the :data:`FULL` runs (not of the sweep at a CPU budget)."""
  return f"{record['tags']['model']}{FULL_SUFFIX}/" in record["name"]


def epochs_of(record) -> int:
  """The epochs ``record``'s run trains (set to, for a run that diverged before the end)."""
  if record["summary"]:
    return record["summary"]["epochs"]
  return runs.Run.from_record(record).make_config().num_epochs


def aggregate(records) -> list[dict]:
  """One row per (dataset, model, epochs, criterion, sparsity): test error mean/std, and the
  gap to the dense network of the same dataset, model and training budget."""
  rows = []
  key = lambda r: (r["tags"]["dataset"], r["tags"]["model"], epochs_of(r))  # noqa: E731
  for (dataset, model, epochs), recs in runs.group(records, key).items():
    dense = runs.Stat.of(
      runs.test_error(r) for r in recs if r["tags"]["criterion"] == DENSE and r["summary"]
    )
    by_setting = runs.group(recs, lambda r: (r["tags"]["criterion"], r["tags"]["sparsity"]))
    for (criterion, sparsity), everything in by_setting.items():
      group = [r for r in everything if r["summary"]]  # Less the runs that diverged.
      err = runs.Stat.of(runs.test_error(r) for r in group)
      # Runs that end at chance level with no layer collapsed (training failed).
      at_chance = [
        r
        for r in group
        if not r["summary"]["collapsed_layers"] and r["summary"]["test_accuracy"] <= CHANCE + 0.01
      ]
      rows.append(
        {
          "dataset": dataset,
          "model": model,
          "criterion": criterion,
          "sparsity": sparsity,
          "n": err.n,
          "test_error_mean": err.mean,
          "test_error_std": err.std,
          "gap_to_dense": err.mean - dense.mean,
          "collapsed_runs": sum(bool(r["summary"]["collapsed_layers"]) for r in group),
          "collapsed_layers": " ".join(
            sorted({name for r in group for name in r["summary"]["collapsed_layers"]})
          ),
          "chance_runs": len(at_chance),
          "chance_first_epoch_loss_max": max(
            (r["metrics"][0]["train_loss"] for r in at_chance), default=None
          ),
          "diverged_runs": len(everything) - len(group),
          "epochs": epochs,
          "steps": group[0]["summary"]["steps"] if group else None,
          "train_examples": group[0]["summary"].get("train_examples") if group else None,
        }
      )
  return rows


def figure(rows, dataset: str, path: Path) -> None:
  """Test error vs fraction of weights kept (log scale), one panel per model, error bars."""
  import matplotlib.ticker

  plt = runs.pyplot()

  rows = [r for r in rows if r["dataset"] == dataset]
  # Per model, the sweep proper: the budget with the most rows (not the FULL check).
  budgets = runs.group(rows, lambda r: (r["model"], r["epochs"]))
  models = list(dict.fromkeys(r["model"] for r in rows))
  sweep_of = {m: max((v for k, v in budgets.items() if k[0] == m), key=len) for m in models}
  rows = [r for m in models for r in sweep_of[m]]
  fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.2), squeeze=False)
  for ax, model in zip(axes[0], models, strict=True):
    mine = [r for r in rows if r["model"] == model]
    for criterion in ordered(r["criterion"] for r in mine):
      pts = sorted((r for r in mine if r["criterion"] == criterion), key=lambda r: r["sparsity"])
      if criterion == DENSE:
        (d,) = pts
        m, s = 100 * d["test_error_mean"], 100 * d["test_error_std"]
        ax.axhline(m, color="black", lw=1.2, label=f"dense ({m:.2f}%)")
        ax.axhspan(m - s, m + s, color="black", alpha=0.08)
        continue
      ax.errorbar(
        [1 - r["sparsity"] for r in pts],
        [100 * r["test_error_mean"] for r in pts],
        yerr=[100 * r["test_error_std"] for r in pts],
        marker="o",
        ms=4,
        color=f"C{ORDER.index(criterion) - 1 if criterion in ORDER else len(ORDER)}",
        capsize=3,
        label=criterion,
      )
    ax.set_xscale("log")
    kept = sorted({1 - r["sparsity"] for r in mine if r["criterion"] != DENSE})
    ax.set_xticks(kept, [f"{100 * k:g}%" for k in kept])
    ax.minorticks_off()
    ax.set_xlabel("weights kept (log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ticks = [t for t in (2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 90) if low <= t <= high]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"{names.MODELS.get(model, model)}, {dataset} (n={mine[0]['n']} seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  runs.save_figure(fig, path)


def write_outputs(out: Path, records) -> list[dict]:
  """``sweep.csv`` and the figures from ``records`` (those of ``<out>/runs.jsonl``); returns
  the aggregated rows."""
  rows = aggregate(records)
  if rows:
    runs.write_csv(rows, out / "sweep.csv")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
      figure(rows, dataset, out / f"sweep_{dataset}.png")
  return rows


def findings(rows) -> dict:
  """SNIP vs dense and random at 98% and 99%, keyed by (dataset, model, epochs, sparsity).

  Args:
    rows: the rows of :func:`aggregate`.

  Returns:
    Per key: the mean test errors of ``dense``, ``snip`` and ``random``, ``snip_std``, the
    ``gap`` of SNIP to dense and ``vs_random`` (how much lower SNIP's error is than random's),
    SNIP's ``n`` and ``epochs``.
  """
  found = {}
  index = {(r["dataset"], r["model"], r["epochs"], r["criterion"], r["sparsity"]): r for r in rows}
  for dataset, model, epochs, criterion, _ in index:
    if criterion == DENSE:
      dense = index[(dataset, model, epochs, DENSE, 0.0)]
      for s in (0.98, 0.99):
        snip, rand = (
          index.get((dataset, model, epochs, "snip", s)),
          index.get((dataset, model, epochs, "random", s)),
        )
        if snip and rand:
          found[(dataset, model, epochs, s)] = {
            "dense": dense["test_error_mean"],
            "snip": snip["test_error_mean"],
            "snip_std": snip["test_error_std"],
            "random": rand["test_error_mean"],
            "gap": snip["test_error_mean"] - dense["test_error_mean"],
            "vs_random": rand["test_error_mean"] - snip["test_error_mean"],
            "n": snip["n"],
            "epochs": epochs,
          }
  return found
