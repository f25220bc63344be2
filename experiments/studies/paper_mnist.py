"""The paper's MNIST experiments on the full MNIST: its recipe question, Tables 2, 3 and 4, |D|.

What ``experiments/paper_mnist.py`` trains (:func:`make_runs`) and how its runs aggregate
(:func:`aggregate`, :func:`tables`). A run is named by what it computes, not by the table that
shows it (``lenet5/authors_code/snip/0.99/seed0``), so a run that two tables show (the
recipe study's runs of the reported recipe are Table 2's) is trained once.

Three recipes are written down (:data:`RECIPES`, from ``snip_jax/train/recipes.py``), because
the paper's text and its authors' code differ:

* ``paper_text``: what the paper's section 5 says for MNIST: SGD with momentum 0.9, learning
  rate 0.1 decayed x0.1 every 25k steps, weight decay 5e-4, batch 100, VS-H weights. It gives
  no total step count; this one trains the default config's 100 epochs (54,000 steps).
* ``authors_code``: what the authors' public code (``namhoonlee/snip-public``, ``snip/main.py``)
  runs for MNIST by default: plain SGD (``GradientDescentOptimizer``) at a constant learning
  rate of 0.1 for 10,000 iterations of batch 100, an L2 loss of 0.00025 * sum(w^2) over the
  (masked) weights and biases (= weight decay 5e-4), weights from TF1's
  ``variance_scaling_initializer()`` (fan-in, scale 1: ``vs_lecun``), biases pruned with the
  weights, and the mask applied to a second, independent initialisation. Here 20 epochs (10,800
  steps): the 10,000 iterations rounded up to whole epochs.
* ``authors_code_text_schedule``: the authors' code trained for the text's 100 epochs, decayed
  x0.1 every 25k steps: LeNet-5-Caffe's recipe (see :data:`REPORTED`).

:data:`REPORTED` is each network's recipe in the tables; the recipe study shows them side by
side.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import runs
from snip_jax import masks
from snip_jax.train import recipes
from studies import names

#: The recipes, as config overrides (every field that differs between them is set in each).
RECIPES = {
  "paper_text": recipes.PAPER_TEXT,
  "authors_code": recipes.AUTHORS_CODE,
  "authors_code_text_schedule": recipes.AUTHORS_CODE_TEXT_SCHEDULE,
}
#: Each network's recipe in Tables 2, 3 and 4 and the |D| study: the paper's text wherever it
#: trains. LeNet-5-Caffe's loss is NaN at it (dense within 10 steps, 98% sparse within 25: the
#: recipe study), and the authors' code's 10,000 steps leave its pruned nets underfit, so it
#: trains with the authors' code at the text's schedule. The authors' code has no RNN.
REPORTED = {
  "lenet300": "paper_text",
  "lenet5": "authors_code_text_schedule",
  "lstm_s": "paper_text",
  "lstm_b": "paper_text",
  "gru_s": "paper_text",
  "gru_b": "paper_text",
}
#: The recipe study's recipes per network: every recipe on both LeNets, so that each difference
#: between the text and the code (optimizer and init, schedule) is measured on each.
RECIPE_STUDY = {
  "lenet300": tuple(RECIPES),
  "lenet5": tuple(RECIPES),
}
#: The paper's ablations (Table 4, the |D| study) train with Adam at 1e-3; every other field,
#: the schedule included (100 epochs, x0.1 every 25k steps), is the network's :data:`REPORTED`
#: recipe. They first trained 20 epochs at a constant rate: LSTM-s was still improving at the
#: end, and LeNet-300-100 ended ~0.5 points above the longer schedule; the ``constant_20``
#: probe keeps that budget measured beside each row.
ADAM = {"optimizer": "adam", "learning_rate": 1e-3}


def ablation(at: str | int | None) -> tuple[dict, str]:
  """``(overrides, label)`` of an ablation's row (Adam): ``at`` an init (Table 4) or a number
  of scoring examples (the |D| study); ``None``: no ablation, ``({}, '')``."""
  if at is None:
    return {}, ""
  if isinstance(at, int):
    return {**ADAM, "score_batch_size": at}, f"+adam+D{at}"
  return {**ADAM, "init": at}, f"+adam+{at}"


def ablation_at(recipe: str) -> str | int | None:
  """The inverse of :func:`ablation` on a recipe tag (``<recipe>+adam+<at>[+<probe>]``): its
  init, its number of scoring examples, or ``None`` when it is no ablation's."""
  _, adam, rest = recipe.partition("+adam+")
  if not adam:
    return None
  at = rest.split("+")[0]
  return int(at.removeprefix("D")) if at.startswith("D") else at


def reported(model: str) -> str:
  """``model``'s recipe in the tables."""
  return REPORTED[model]


#: The paper's numbers (Lee et al. 2019): test error (%) keyed by (model, sparsity); sparsity 0
#: is the dense reference.
PAPER_TABLE2 = {
  ("lenet300", 0.0): 1.7,
  ("lenet300", 0.95): 1.6,
  ("lenet300", 0.98): 2.4,
  ("lenet5", 0.0): 0.9,
  ("lenet5", 0.98): 0.8,
  ("lenet5", 0.99): 1.1,
}
PAPER_TABLE3 = {
  ("lstm_s", 0.0): 1.88,
  ("lstm_s", 0.95): 1.57,
  ("lstm_b", 0.0): 1.15,
  ("lstm_b", 0.95): 1.35,
  ("gru_s", 0.0): 1.87,
  ("gru_s", 0.95): 2.41,
  ("gru_b", 0.0): 1.71,
  ("gru_b", 0.95): 1.52,
}
#: Table 4, at 90% sparsity: (model, init) -> error (%).
PAPER_TABLE4 = {
  **{("lenet300", i): e for i, e in zip(names.INITS, (1.90, 1.96, 1.91, 1.88), strict=True)},
  **{("lenet5", i): e for i, e in zip(names.INITS, (0.89, 0.87, 0.88, 0.85), strict=True)},
  **{("lstm_s", i): e for i, e in zip(names.INITS, (2.93, 3.03, 1.48, 1.47), strict=True)},
  **{("gru_s", i): e for i, e in zip(names.INITS, (47.61, 46.48, 1.80, 1.80), strict=True)},
}
#: The |D| study, LeNet-300-100 at 90%: scoring examples -> error (%).
PAPER_DATASET_SIZE = {1: 1.94, 10: 1.72, 100: 1.64, 1_000: 1.56, 10_000: 1.40}

TABLE2 = {"lenet300": (0.95, 0.98), "lenet5": (0.98, 0.99)}
TABLE3 = ("lstm_s", "lstm_b", "gru_s", "gru_b")
TABLE3_SPARSITY = 0.95
TABLE4_MODELS = ("lenet300", "lenet5", "lstm_s", "gru_s")
ABLATION_SPARSITY = 0.9
DATASET_SIZES = tuple(PAPER_DATASET_SIZE)
RNNS = {"lstm_s", "lstm_b", "gru_s", "gru_b"}
STUDIES = ("recipe", "table2", "table3", "table4", "dataset_size", "probes", "stability")
DENSE = "dense"
#: The recipe study's seeds: its runs of the recipe a network is not reported with are there to
#: show how the recipes differ (the paper's text trains LeNet-5-Caffe's pruned nets 54,000 steps,
#: ~40 minutes each here).
RECIPE_SEEDS = 3
#: The ``probes`` study: what was tried where the reported recipe misses the paper or departs
#: from its text. A probe changes fields of a reported row's recipe: one change of
#: :data:`PROBES` (display names: ``names.PROBES``), or several joined by ``+``, applied in
#: order. :data:`PROBES_AT` says which probes run at which ``(model, criterion, sparsity,
#: ablation)``: ``ablation`` ``None`` is the network's reported recipe (Tables 2 and 3), an
#: init that init's Table 4 row, a number of scoring examples that row of the |D| study (both
#: Adam: :func:`ablation`). Each runs :data:`PROBE_SEEDS` seeds, or its row's where
#: :data:`PROBE_ALL_SEEDS` says so.
PROBES = {
  "no_weight_decay": {"weight_decay": 0.0},
  "vs_lecun": {"init": "vs_lecun"},
  "momentum": {"momentum": 0.9},
  # The ablations' first budget: 20 epochs at a constant learning rate.
  "constant_20": {"num_epochs": 20, "lr_decay_factor": 1.0},
}
#: The probe that trains an ablation row at its first budget (20 epochs at a constant rate).
FIRST_BUDGET = "constant_20"
PROBES_AT = {
  # Table 2's miss: does the sparse net's fit depend on the weight decay or the init?
  ("lenet300", "snip", 0.98, None): ("no_weight_decay", "vs_lecun"),
  # LeNet-5-Caffe drops the text's momentum: does it train with the code's init?
  ("lenet5", DENSE, 0.0, None): ("momentum",),
  ("lenet5", "snip", 0.98, None): ("momentum",),
  # Every ablation row at its first budget, 20 constant epochs (97.6-99.6% training accuracy
  # at the end). There LeNet-300-100 and LSTM-s missed the paper: did the L2 weight decay, which
  # Adam's scaling makes strongest where gradients are small, keep them from fitting?
  **{
    (model, "snip", ABLATION_SPARSITY, init): (FIRST_BUDGET,)
    for model in TABLE4_MODELS
    for init in names.INITS
  },
  **{("lenet300", "snip", ABLATION_SPARSITY, size): (FIRST_BUDGET,) for size in DATASET_SIZES},
  # (These VS-H rows replace the comprehension's.)
  **{
    (model, "snip", ABLATION_SPARSITY, "vs_h"): (FIRST_BUDGET, f"{FIRST_BUDGET}+no_weight_decay")
    for model in ("lenet300", "lstm_s")
  },
}
PROBE_SEEDS = 3
#: Probes run at every seed of their row: the ablations' first budget was their rows' runs.
PROBE_ALL_SEEDS = {FIRST_BUDGET}

#: The ``stability`` study: does the dense LeNet-5-Caffe train at the authors' code's learning
#: rate (plain SGD at 0.1)? One epoch of its reported recipe from each draw of TF1's init
#: (``snip_jax.init``: TF <= 1.8's, and the rescaled one of later releases), over
#: :data:`STABILITY_SEEDS` seeds each: how many runs' loss becomes NaN.
STABILITY_INITS = ("vs_lecun_tf18", "vs_lecun")
STABILITY_SEEDS = 20
#: The stability runs' mark in their recipe label: ``<recipe>+epoch1+<init>``.
STABILITY = "epoch1"
#: --quick: a few steps on a slice of the data.
QUICK = {"num_epochs": 1, "train_examples": 500}


def probe_overrides(probe: str) -> dict:
  """The config overrides of ``probe``: :data:`PROBES`' changes named in it (``+``-joined),
  in order."""
  changes = probe.split("+")
  for change in changes:
    if change not in PROBES:
      raise ValueError(f"Unknown probe {change!r} in {probe!r}; choose from {tuple(PROBES)}.")
  return {k: v for change in changes for k, v in PROBES[change].items()}


def is_probe(label: str) -> bool:
  """Whether ``label`` (a recipe tag's part after ``<recipe>+`` or ``<recipe>+adam+<at>+``)
  names a probe: one or more of :data:`PROBES` joined by ``+``."""
  return bool(label) and all(change in PROBES for change in label.split("+"))


def run_spec(model, recipe, criterion, sparsity, seed, extra=None, label="", quick=False):
  """One MNIST run: ``model`` trained with ``RECIPES[recipe]`` (plus ``extra``), pruned to
  ``sparsity`` by ``criterion`` (``'dense'``: not pruned)."""
  overrides = {**RECIPES[recipe], **(extra or {}), "sparsity": sparsity, "seed": seed}
  if criterion != DENSE:
    overrides["criterion"] = criterion
  if quick:
    overrides.update(QUICK)
    if "score_batch_size" in overrides:  # The |D| rows: no more than the quick slice holds.
      overrides["score_batch_size"] = min(overrides["score_batch_size"], QUICK["train_examples"])
  setting = f"{recipe}{label}/{criterion}/{sparsity}"
  return runs.Run(
    name=f"{model}/{setting}/seed{seed}",
    config=f"{model}_mnist",
    overrides=overrides,
    tags={
      "model": model,
      "recipe": recipe + label,
      "criterion": criterion,
      "sparsity": sparsity,
      "seed": seed,
      **{k: v for k, v in (extra or {}).items() if k in ("init", "score_batch_size")},
    },
  )


def make_runs(
  studies,
  seeds: int,
  rnn_seeds: int,
  quick: bool = False,
  models=None,
  stability_seeds: int = STABILITY_SEEDS,
) -> list[runs.Run]:
  """The runs of ``studies`` (names of :data:`STUDIES`), seed-major (every setting of seed 0
  first), each once: ``seeds`` seeds for the LeNets, ``rnn_seeds`` for the RNNs, at most
  :data:`RECIPE_SEEDS` for the recipe study (its runs of a reported recipe are Table 2's, with
  all the seeds when Table 2 is run too), ``stability_seeds`` for the stability study.
  ``models`` (default: all of :data:`REPORTED`) keeps only those networks' runs: a long sweep
  can give one session's time to the runs it will finish."""
  settings = []  # (model, recipe, criterion, sparsity, extra, label, most seeds)
  for study in studies:
    if study not in STUDIES:
      raise ValueError(f"Unknown study {study!r}; choose from {STUDIES}.")
  for model in models or ():
    if model not in REPORTED:
      raise ValueError(f"Unknown network {model!r}; choose from {tuple(REPORTED)}.")
  if "recipe" in studies:
    for model, (_, headline) in TABLE2.items():
      for recipe in RECIPE_STUDY[model]:
        settings += [
          (model, recipe, DENSE, 0.0, None, "", RECIPE_SEEDS),
          (model, recipe, "snip", headline, None, "", RECIPE_SEEDS),
        ]
  if "table2" in studies:
    for model, sparsities in TABLE2.items():
      settings.append((model, reported(model), DENSE, 0.0, None, "", None))
      for s in sparsities:
        settings += [(model, reported(model), c, s, None, "", None) for c in ("snip", "random")]
  if "table3" in studies:
    for model in TABLE3:
      settings += [
        (model, reported(model), DENSE, 0.0, None, "", None),
        (model, reported(model), "snip", TABLE3_SPARSITY, None, "", None),
      ]
  if "table4" in studies:
    for model in TABLE4_MODELS:
      for init in names.INITS:
        extra, label = ablation(init)
        settings.append((model, reported(model), "snip", ABLATION_SPARSITY, extra, label, None))
  if "dataset_size" in studies:
    for size in DATASET_SIZES:
      extra, label = ablation(size)
      recipe = reported("lenet300")
      settings.append(("lenet300", recipe, "snip", ABLATION_SPARSITY, extra, label, None))
  if "probes" in studies:
    for (model, criterion, sparsity, at), probes in PROBES_AT.items():
      base, base_label = ablation(at)
      for probe in probes:
        extra, label = {**base, **probe_overrides(probe)}, f"{base_label}+{probe}"
        most = None if probe in PROBE_ALL_SEEDS else PROBE_SEEDS
        settings.append((model, reported(model), criterion, sparsity, extra, label, most))
  counts = [min(rnn_seeds if s[0] in RNNS else seeds, s[-1] or math.inf) for s in settings]
  if "stability" in studies:  # Its own number of seeds: it counts runs that diverge.
    for init in STABILITY_INITS:
      extra, label = {"init": init, "num_epochs": 1}, f"+{STABILITY}+{init}"
      settings.append(("lenet5", reported("lenet5"), DENSE, 0.0, extra, label, None))
      counts.append(stability_seeds)
  chosen = [
    (s, n) for s, n in zip(settings, counts, strict=True) if models is None or s[0] in models
  ]
  result, seen = [], set()
  for seed in range(max((n for _, n in chosen), default=0)):
    for (model, recipe, criterion, sparsity, extra, label, _), count in chosen:
      if seed >= count:
        continue
      run = run_spec(model, recipe, criterion, sparsity, seed, extra, label, quick)
      if run.name not in seen:
        seen.add(run.name)
        result.append(run)
  return result


#: What names a setting (the runs of its seeds): the tags of a record, the columns of a row.
SETTING = ("model", "recipe", "criterion", "sparsity")


def setting_of(record) -> tuple:
  """The setting a record of ``runs.jsonl`` is a run of: its :data:`SETTING` tags."""
  return tuple(record["tags"][k] for k in SETTING)


def index(rows) -> dict[tuple, dict]:
  """The rows of :func:`aggregate` by their setting."""
  return {tuple(row[k] for k in SETTING): row for row in rows}


def diverged(record) -> bool:
  """Whether the run stopped at a non-finite training loss (then it has no test error)."""
  return record.get("diverged") is not None


def aggregate(records) -> list[dict]:
  """One row per (model, recipe, criterion, sparsity): test error mean/std over the finished
  seeds, how many diverged, the steps trained and the time."""
  rows = []
  for (model, recipe, criterion, sparsity), group in runs.group(records, setting_of).items():
    finished = [r for r in group if not diverged(r)]
    err = runs.Stat.of(runs.test_error(r) for r in finished)
    last_epochs = [r["metrics"][-1] for r in finished if r["metrics"]]
    first = group[0]
    rows.append(
      {
        "model": model,
        "recipe": recipe,
        "criterion": criterion,
        "sparsity": sparsity,
        "init": first["overrides"].get("init"),
        "score_examples": first["overrides"].get("score_batch_size", 100),
        "n": err.n,
        "diverged_runs": len(group) - len(finished),
        "diverged_at_step_max": max(
          (r["diverged"]["step"] for r in group if diverged(r)), default=None
        ),
        "test_error_mean": err.mean,
        "test_error_std": err.std,
        # Finished runs whose mask cut some outputs off the input (their classes are guessed).
        "cut_output_runs": sum(bool(r["summary"].get("num_cut_outputs")) for r in finished),
        # How well the runs fit the training set: their last epoch's mean loss and accuracy.
        "final_train_loss_mean": runs.Stat.of(m["train_loss"] for m in last_epochs).mean,
        "final_train_accuracy_mean": runs.Stat.of(m["train_accuracy"] for m in last_epochs).mean,
        "epochs": finished[0]["summary"]["epochs"] if finished else None,
        "steps": finished[0]["summary"]["steps"] if finished else None,
        "worker_hours": runs.total_hours(group),
      }
    )
  return rows


def reported_settings():
  """``(table, setting)`` of every row set beside a paper's number, in the tables' order: Table
  2, Table 3, Table 4 and the |D| study (a setting as :func:`setting_of` gives it)."""
  for model, sparsities in TABLE2.items():
    for s in (0.0, *sparsities):
      yield "Table 2", (model, reported(model), DENSE if s == 0 else "snip", s)
  for model in TABLE3:
    for s in (0.0, TABLE3_SPARSITY):
      yield "Table 3", (model, reported(model), DENSE if s == 0 else "snip", s)
  for model in TABLE4_MODELS:
    for init in names.INITS:
      yield "Table 4", (model, f"{reported(model)}+adam+{init}", "snip", ABLATION_SPARSITY)
  for size in DATASET_SIZES:
    recipe = f"{reported('lenet300')}+adam+D{size}"
    yield "the |D| study", ("lenet300", recipe, "snip", ABLATION_SPARSITY)


def table_settings(*tables: str) -> list[tuple]:
  """The settings of ``tables`` (names :func:`reported_settings` gives), in their order."""
  return [setting for table, setting in reported_settings() if table in tables]


def curve_settings() -> set[tuple]:
  """The settings whose validation curves ``curves.png`` shows: Tables 2 and 3 (those of the
  ablations, which differ by init or |D| at one sparsity, are ``ablation_curves.png``'s)."""
  return set(table_settings("Table 2", "Table 3"))


def paper_number(row) -> float | None:
  """The paper's test error (%) for ``row``'s setting, if it reports one."""
  model, sparsity = row["model"], row["sparsity"]
  if row["recipe"] == reported(model) and row["criterion"] in (DENSE, "snip"):
    table = PAPER_TABLE3 if model in RNNS else PAPER_TABLE2
    return table.get((model, sparsity))
  base, *changes = row["recipe"].split("+")
  if base != reported(model) or (changes and changes[-1] in PROBES):
    return None  # Another recipe's row, or a probe's: the paper's numbers are the reported rows'.
  if "+adam+D" in row["recipe"]:
    return PAPER_DATASET_SIZE.get(row["score_examples"])
  if "+adam+" in row["recipe"]:
    return PAPER_TABLE4.get((model, row["init"]))
  return None


#: The validation curves of Table 4's and the |D| study's runs, beside ``curves.png``.
ABLATION_CURVES = "ablation_curves.png"
#: How the |D| study's masks differ (:func:`dataset_size_overlaps`), beside ``runs.jsonl``.
OVERLAP_CSV = "dataset_size_overlap.csv"

#: A test error (%) above which a network has failed to learn MNIST: the paper's GRU-s with
#: RN/TN initialisation (Table 4) reports 46-48%, every working setting below 4%.
FAILED_ERROR = 10.0


def verdict(row) -> str:
  """How ``row`` compares with the paper: at or below it, within one of our standard
  deviations above it, or above that (a miss). Where the paper reports a failure (an error above
  :data:`FAILED_ERROR`), whether ours failed too: a low error there is not "at or below" it."""
  paper = paper_number(row)
  if paper is None or row["n"] == 0 or math.isnan(row["test_error_mean"]):
    return ""
  ours, std = 100 * row["test_error_mean"], 100 * row["test_error_std"]
  if paper > FAILED_ERROR:
    return "failed as in the paper" if ours > FAILED_ERROR else "trained; the paper's failed"
  if ours <= paper:
    return "at or below"
  return "within 1 std" if ours - std <= paper else "miss"


def curve_panels(records) -> list[tuple[str, dict[str, list]]]:
  """``curves.png``'s panels, ``(title, {label: runs})``: per network of Tables 2 and 3, the
  runs of each of its settings there (dense, SNIP and random pruning at each sparsity)."""
  shown = curve_settings()
  panels = []
  for model in (*TABLE2, *TABLE3):
    mine = [r for r in records if setting_of(r) in shown and r["tags"]["model"] == model]
    by_setting = runs.group(mine, lambda r: (r["tags"]["criterion"], r["tags"]["sparsity"]))
    groups = {
      "dense" if c == DENSE else f"{names.CRITERIA[c]} {s:.0%}": group
      for (c, s), group in sorted(by_setting.items())
    }
    if groups:
      panels.append((f"{names.MODELS[model]}, MNIST", groups))
  return panels


def ablation_panels(records) -> list[tuple[str, dict[str, list]]]:
  """``ablation_curves.png``'s panels, ``(title, {label: runs})``: per network of Table 4, the
  runs of each init; then the |D| study's, of each number of scoring examples."""
  by_setting = runs.group(records, setting_of)
  panels = []
  for model in TABLE4_MODELS:
    groups = {}
    for setting in table_settings("Table 4"):
      if setting[0] == model and setting in by_setting:
        groups[names.INITS[ablation_at(setting[1])]] = by_setting[setting]
    if groups:
      panels.append((f"{names.MODELS[model]}: Table 4, SNIP 90%, Adam", groups))
  groups = {
    f"|D| = {ablation_at(setting[1]):,}": by_setting[setting]
    for setting in table_settings("the |D| study")
    if setting in by_setting
  }
  if groups:
    panels.append((f"{names.MODELS['lenet300']}: |D|, SNIP 90%, Adam", groups))
  return panels


def curves_figure(panels: list[tuple[str, dict[str, list]]], path: Path) -> None:
  """Validation error per epoch (mean over the seeds that did not diverge, min..max band) of
  each panel's groups of runs: whether their budget has converged."""
  plt = runs.pyplot()
  cols = min(len(panels), 3)
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
  for ax in axes.flat[len(panels) :]:
    ax.set_visible(False)
  for ax, (title, groups) in zip(axes.flat, panels, strict=False):
    for i, (label, group) in enumerate(groups.items()):
      finished = [r for r in group if not diverged(r)]
      if not finished:
        continue
      errors = np.array([[1 - m["val_accuracy"] for m in r["metrics"]] for r in finished])
      epochs = np.arange(1, errors.shape[1] + 1)
      ax.plot(epochs, 100 * errors.mean(0), color=f"C{i}", label=f"{label} (n={len(finished)})")
      ax.fill_between(epochs, 100 * errors.min(0), 100 * errors.max(0), color=f"C{i}", alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  runs.save_figure(fig, path)


def dataset_size_overlaps(out: Path, records) -> list[dict]:
  """Per seed and row of the |D| study: the intersection over union of its mask's kept
  connections with those of the largest |D| at the same seed (:func:`snip_jax.masks.overlap`),
  from the masks the runs saved (``<out>/runs/<name>/mask.npz``). Seeds whose masks are not all
  there are left out (none when the runs' directories are not: a clone has only the records)."""
  settings = table_settings("the |D| study")
  by_seed = runs.group(
    [r for r in records if setting_of(r) in settings], lambda r: r["tags"]["seed"]
  )
  rows = []
  for seed, group in sorted(by_seed.items()):
    files = {setting_of(r): out / "runs" / r["name"] / "mask.npz" for r in group}
    if set(files) != set(settings) or not all(f.exists() for f in files.values()):
      continue
    loaded = {}
    for setting, file in files.items():
      with np.load(file) as data:
        loaded[setting] = {k: data[k] for k in data.files}
    largest = loaded[settings[-1]]
    for setting in settings:
      rows.append(
        {
          "seed": seed,
          "score_examples": ablation_at(setting[1]),
          "iou_with_largest": masks.overlap(loaded[setting], largest)["total"],
        }
      )
  return rows


def write_outputs(out: Path, records) -> list[dict]:
  """``paper_mnist.csv`` (one row per setting, with the paper's number and the verdict) and
  the validation curves of Table 2's and Table 3's runs (``curves.png``) and of the ablations'
  (``ablation_curves.png``) from ``records``, and where the runs' masks are there, how the
  |D| study's differ (:data:`OVERLAP_CSV`); returns the rows."""
  rows = aggregate(records)
  for row in rows:
    row["paper_test_error_pct"] = paper_number(row)
    row["verdict"] = verdict(row)
  if rows:
    runs.write_csv(rows, out / "paper_mnist.csv")
  for name, panels in (
    ("curves.png", curve_panels(records)),
    (ABLATION_CURVES, ablation_panels(records)),
  ):
    if panels:
      curves_figure(panels, out / name)
  overlaps = dataset_size_overlaps(out, records)
  if overlaps:
    runs.write_csv(overlaps, out / OVERLAP_CSV)
  return rows
