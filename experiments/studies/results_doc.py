"""RESULTS.md and README's results blocks, from the raw results and ``results_template.md``.

:func:`write` reads ``<results>/{sweep,random_labels,mask_pictures,ablations,sparse_export}/``
(the raw files the experiment scripts write) and ``<results>/model_zoo/models.json``, redraws
every figure, writes RESULTS.md and rewrites README's blocks ``paper-results`` and
``sparse-export``. The words are those of ``results_template.md``; this module only computes
what fills its placeholders: every number from the raw results (a run's settings from its record
in ``runs.jsonl``: the config file it names, with its overrides), the paper's numbers from the
``PAPER`` tables of the studies.
"""

from __future__ import annotations

import collections
import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

import runs
from report import Fragments, machine, replace_block, size_text
from studies import (
  ablations,
  comparisons,
  mask_pictures,
  names,
  paper_mnist,
  random_labels,
  sweep,
)

TEMPLATE = Path(__file__).with_name("results_template.md")

#: The paper's VGG-D on CIFAR-10: sparsity, test error of SNIP and of the dense network.
PAPER_CIFAR = {"vgg_d": (0.95, 0.0709, 0.0676)}
#: The CIFAR-10 networks of section 6: name, config file (``experiments/configs/<name>.py``).
GPU_CONFIGS = (
  ("VGG-D", "vgg_d_cifar10"),
  ("VGG-C", "vgg_c_cifar10"),
  ("VGG-like", "vgg_like_cifar10"),
  ("AlexNet-s", "alexnet_s_cifar10"),
  ("AlexNet-b", "alexnet_b_cifar10"),
  ("WRN-16-8", "wrn_16_8_cifar10"),
  ("WRN-16-10", "wrn_16_10_cifar10"),
  ("WRN-22-8", "wrn_22_8_cifar10"),
)
#: README's headline sweep setting: dataset, model, sparsity.
README_SWEEP = ("fashion_mnist", sweep.FULL["model"], sweep.FULL["sparsity"])
#: The sparsities of README's sparse-export table (the issue's four).
README_EXPORT_SPARSITIES = (0.9, 0.95, 0.98, 0.99)


# --------------------------------------------------------------------------------------------
# How numbers are written.


def pct(x: float, digits: int = 2) -> str:
  """A fraction in percent, without the sign: ``'13.92'``; ``'-'`` for NaN."""
  return "-" if math.isnan(x) else f"{100 * x:.{digits}f}"


def pm(row: dict, key: str, digits: int = 2) -> str:
  """``row``'s ``<key>_mean ± <key>_std``, fractions shown in percentage points."""
  return runs.Stat(row[f"{key}_mean"], row[f"{key}_std"], row["n"]).pct(digits)


def percent(fraction: float) -> str:
  """A sparsity as few digits as it needs: ``'98%'``, ``'99.5%'``."""
  return f"{100 * fraction:g}%"


def number(x: float) -> str:
  """A setting as a config file writes it: ``'0.1'``, ``'0.001'``, ``'5e-4'``."""
  if x and abs(x) < 1e-3:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"
  return f"{x:g}"


def seconds(x: float) -> str:
  """``'0.7'``, ``'22'``: a rough duration."""
  return f"{x:.1g}" if x < 1 else f"{x:.0f}"


def and_list(items: Iterable[str]) -> str:
  """``'a, b and c'``."""
  items = list(items)
  return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)


def plural(count: int, word: str) -> str:
  return f"{count} {word}{'' if count == 1 else 's'}"


def rel(path: Path, base: Path) -> str:
  try:
    return str(path.relative_to(base))
  except ValueError:
    return str(path)


def worker_time(records) -> str:
  """``'2.20 h of worker time on <CPU>'`` (with each CPU's runs when there are several): the
  runs' summed wall-clock time and what they ran on."""
  counts = collections.Counter(cpu_of(r) for r in records)
  time = f"{runs.total_hours(records):.2f} h of worker time"
  if len(counts) == 1:
    return f"{time} on {next(iter(counts))}"
  return f"{time}: " + and_list(f"{plural(n, 'run')} on {cpu}" for cpu, n in sorted(counts.items()))


def cpus(records) -> str:
  """The CPUs ``records`` were made on."""
  return and_list(sorted({cpu_of(r) for r in records}))


def recipe_name(recipe: str) -> str:
  """A run's recipe tag in words: ``'the paper's text'``, ``'the paper's text, no weight
  decay'`` (a probe), ``'the paper's text, Adam'`` (an ablation: ``+adam+<init or |D|>``),
  ``'the paper's text, Adam, no weight decay'`` (a probe of an ablation)."""
  base, *changes = recipe.split("+")
  words = [names.RECIPES[base]]
  if changes[:1] == ["adam"]:
    words.append("Adam")
    changes = changes[2:]
  if changes:
    words.append(probe_name("+".join(changes)))
  return ", ".join(words)


def probe_name(probe: str) -> str:
  """A probe (``studies.paper_mnist.PROBES`` names, ``+``-joined) in words."""
  return ", ".join(names.PROBES[change] for change in probe.split("+"))


def cpu_of(record: dict) -> str:
  """The CPU a run record names, with its cores where recorded (a conv net's numbers depend on
  both); records made before runs named their CPU say so."""
  cpu = record.get("cpu", "an unrecorded CPU (made before run records named theirs)")
  return f"{cpu} ({record['cores']} cores)" if "cores" in record else cpu


def align_right(columns: int) -> str:
  """The separator cells of ``columns`` right-aligned markdown columns."""
  return "|".join(["---:"] * columns)


class Document:
  """Computes the values of every fragment of ``results_template.md`` from the raw results.

  Args:
    results: the raw results directory.
    base: the directory of the RESULTS.md written (its figure links are relative to it).
    template: the fragments of the prose.
  """

  def __init__(self, results: Path, base: Path, template: Path = TEMPLATE):
    self.results = results
    self.base = base
    self.fill = Fragments(template)

  def missing(self, heading: str, script: str) -> str:
    return self.fill("missing", heading=heading, command=f"python experiments/{script}.py") + "\n"

  # ------------------------------------------------------------------------------------------
  # MNIST: the paper's own tables.

  @staticmethod
  def _seeds(row: dict) -> str:
    """``'3'``, or ``'2, 1 of 3 diverged'``: the seeds a mean is of, and those left out."""
    if not row["diverged_runs"]:
      return str(row["n"])
    return f"{row['n']}, {row['diverged_runs']} of {row['n'] + row['diverged_runs']} diverged"

  def _readme_mnist(self, rows) -> list[str]:
    """README's lines for Table 2's headline rows (each LeNet dense and at its top sparsity)
    beside the paper's numbers, as far as they are run; ``rows`` are the MNIST section's."""
    index = paper_mnist.index(rows)
    lines = []
    for model, sparsities in paper_mnist.TABLE2.items():
      s = sparsities[-1]
      snip = index.get((model, paper_mnist.reported(model), "snip", s))
      dense = index.get((model, paper_mnist.reported(model), "dense", 0.0))
      if not (snip and dense and snip["n"] and dense["n"]):
        continue
      lines.append(
        self.fill(
          "readme_mnist",
          model=names.MODELS[model],
          sparsity=percent(s),
          snip_recipe=names.RECIPES[snip["recipe"]],
          dense_recipe=names.RECIPES[dense["recipe"]],
          snip=pm(snip, "test_error"),
          dense=pm(dense, "test_error"),
          snip_n=self._seeds(snip),
          dense_n=self._seeds(dense),
          paper_snip=f"{paper_mnist.PAPER_TABLE2[(model, s)]:g}",
          paper_dense=f"{paper_mnist.PAPER_TABLE2[(model, 0.0)]:g}",
        )
      )
    return lines

  def paper_mnist(self) -> tuple[str, list[dict]]:
    """The MNIST section (the recipe study, Tables 2, 3 and 4 and the |D| study, each beside
    the paper's numbers; a table not run yet says so), and its aggregated rows."""
    out = self.results / "paper_mnist"
    records = runs.read_records(out)
    rows = paper_mnist.write_outputs(out, records)
    if not rows:
      return self.missing("MNIST: the paper's own tables", "paper_mnist"), []
    index = paper_mnist.index(rows)
    code, text = paper_mnist.RECIPES["authors_code"], paper_mnist.RECIPES["paper_text"]
    parts = [
      self.fill(
        "paper_mnist",
        cpus=cpus(records),
        recipe_rows=runs.markdown_rows(self._recipe_rows(index)),
        recipe_findings=self._recipe_findings(rows),
        stability=self._stability(index),
        choices=self._recipes_of(paper_mnist.TABLE2),
        reason=self._recipe_reason(rows),
        code_epochs=code["num_epochs"],
        text_epochs=text["num_epochs"],
        text_decay=f"{text['lr_decay_every_steps']:,}",
        figure=rel(out / "curves.png", self.base),
      )
    ]
    for body, missing in (
      (self._table2(index), lambda: self.fill("paper_mnist_table2_missing")),
      (self._table3(index), lambda: self.fill("paper_mnist_table3_missing")),
      (self._table4(index), lambda: self.fill("paper_mnist_table4_missing")),
      (self._dataset_size(index), lambda: self.fill("paper_mnist_dataset_size_missing")),
    ):
      parts.append(body or missing())
    if paper_mnist.ablation_panels(records):  # Drawn by write_outputs.
      figure = rel(out / paper_mnist.ABLATION_CURVES, self.base)
      parts.append(self.fill("paper_mnist_ablation_curves", figure=figure))
    cut = self._cut_outputs(records, index)
    if cut:
      parts.append(cut)
    misses = self._misses(index)
    if misses:
      parts.append(self.fill("paper_mnist_misses", items="\n".join(misses)))
    parts.append(
      self.fill(
        "paper_mnist_cost",
        runs=len(records),
        worker_time=worker_time(records),
        failed_error=f"{paper_mnist.FAILED_ERROR:g}",
      )
    )
    commands = {}
    for r in records:  # One line per setting: its first seed's command.
      commands.setdefault(paper_mnist.setting_of(r), r["command"])
    parts.append(self.fill("paper_mnist_commands", commands="\n".join(commands.values())))
    return "\n\n".join(parts) + "\n", rows

  @staticmethod
  def _cell(row: dict | None) -> str:
    """``'1.23 ± 0.04 (n=5)'``; a setting whose runs diverged says so; ``'-'``: not run."""
    if row is None:
      return "-"
    total = row["n"] + row["diverged_runs"]
    if row["n"] == 0:
      return f"diverged (loss NaN by step {row['diverged_at_step_max']}; {total}/{total} runs)"
    cell = f"{pm(row, 'test_error')} (n={row['n']})"
    if row["diverged_runs"]:
      cell += f", {row['diverged_runs']}/{total} diverged"
    return cell

  def _stability(self, index) -> str:
    """The stability study, a paragraph after the recipe study's findings: in how many one-epoch
    runs of the dense LeNet-5-Caffe the loss became NaN, from each draw of TF1's init ('' before
    it has run)."""
    recipe = paper_mnist.reported("lenet5")
    found = {
      init: row
      for init in paper_mnist.STABILITY_INITS
      if (row := index.get(("lenet5", f"{recipe}+{paper_mnist.STABILITY}+{init}", "dense", 0.0)))
    }
    if len(found) < len(paper_mnist.STABILITY_INITS):
      return ""
    nan, trained = {}, {}
    for init, row in found.items():
      total = row["n"] + row["diverged_runs"]
      by = f" (by step {row['diverged_at_step_max']})" if row["diverged_runs"] else ""
      nan[init] = f"{row['diverged_runs']} of {total} runs{by}"
      trained[init] = f"{pm(row, 'test_error')} (n={row['n']})" if row["n"] else "none trained"
    tf18, rescaled = paper_mnist.STABILITY_INITS
    return "\n\n" + self.fill(
      "paper_mnist_stability",
      recipe=names.RECIPES[recipe],
      nan_tf18=nan[tf18],
      nan_rescaled=nan[rescaled],
      trained_tf18=trained[tf18],
      trained_rescaled=trained[rescaled],
    )

  def _recipe_rows(self, index) -> list[list[str]]:
    result = []
    for model, (_, headline) in paper_mnist.TABLE2.items():
      for criterion, sparsity in ((paper_mnist.DENSE, 0.0), ("snip", headline)):
        paper = paper_mnist.PAPER_TABLE2[(model, sparsity)]
        result.append(
          [
            names.MODELS[model],
            "dense" if sparsity == 0 else f"SNIP {percent(sparsity)}",
            *(self._cell(index.get((model, r, criterion, sparsity))) for r in paper_mnist.RECIPES),
            f"{paper:.1f}",
          ]
        )
    return result

  def _recipe_findings(self, rows) -> str:
    items = []
    for r in rows:
      probe = r["recipe"].partition("+")[2]
      if (not probe or paper_mnist.is_probe(probe)) and r["diverged_runs"]:
        items.append(
          self.fill(
            "paper_mnist_diverged",
            model=names.MODELS[r["model"]],
            setting=self._setting(r),
            recipe=recipe_name(r["recipe"]),
            count=r["diverged_runs"],
            total=r["diverged_runs"] + r["n"],
            step=r["diverged_at_step_max"],
          )
        )
    return "\n".join(items)

  def _recipe_reason(self, rows) -> str:
    """The recipe study's evidence against the paper's text, where a network is not reported
    at it: the settings whose runs diverged there."""
    clauses = []
    for model in paper_mnist.TABLE2:
      if paper_mnist.reported(model) == "paper_text":
        continue
      failed = [
        r
        for r in rows
        if r["model"] == model and r["recipe"] == "paper_text" and r["diverged_runs"]
      ]
      if failed:
        cases = [
          self.fill(
            "paper_mnist_reason_case",
            setting=self._setting(r),
            count=r["diverged_runs"],
            total=r["diverged_runs"] + r["n"],
            step=r["diverged_at_step_max"],
          )
          for r in failed
        ]
        clauses.append(
          self.fill("paper_mnist_reason", model=names.MODELS[model], cases=and_list(cases))
        )
    return "".join(f" {c}" for c in clauses)

  def _misses(self, index) -> list[str]:
    """One item per row that misses the paper's number: the evidence at its setting."""
    items = []
    for table, setting in paper_mnist.reported_settings():
      row = index.get(setting)
      if row is None or paper_mnist.verdict(row) != "miss":
        continue
      model, recipe, criterion, sparsity = setting
      base = recipe.split("+")[0]
      dense = index.get((model, recipe, paper_mnist.DENSE, 0.0)) if sparsity else None
      others = {  # The other recipes and the probes measured at this setting.
        **{r: names.RECIPES[r] for r in paper_mnist.RECIPE_STUDY.get(model, ()) if r != base},
        **{
          r: probe_name(r.removeprefix(f"{recipe}+"))
          for r in sorted({key[1] for key in index if key[0] == model})
          if r.startswith(f"{recipe}+") and paper_mnist.is_probe(r.removeprefix(f"{recipe}+"))
        },
      }
      tried = [
        self.fill("paper_mnist_miss_other", what=name, cell=self._cell(other), **self._fit(other))
        for r, name in others.items()
        if (other := index.get((model, r, criterion, sparsity))) and other["n"]
      ]
      items.append(
        self.fill(
          "paper_mnist_miss",
          table=table,
          model=names.MODELS[model],
          setting=self._setting(row),
          recipe=recipe_name(recipe),
          ours=self._cell(row),
          paper=f"{paper_mnist.paper_number(row):g}",
          diff=f"{100 * row['test_error_mean'] - paper_mnist.paper_number(row):+.2f}",
          **self._fit(row),
          dense_fit=self.fill("paper_mnist_miss_dense_fit", **self._fit(dense))
          if dense and dense["n"]
          else "",
          tried=self.fill("paper_mnist_miss_tried", items="; ".join(tried)) if tried else "",
        )
      )
    return items

  def _cut_outputs(self, records, index) -> str:
    """The runs of the reported rows whose mask cut some outputs off the input (the summary's
    ``cut_outputs``; records made before runs counted them are named as unchecked)."""
    tables = {setting: table for table, setting in paper_mnist.reported_settings()}
    reported = [r for r in records if paper_mnist.setting_of(r) in tables and r["summary"]]
    checked = [r for r in reported if "num_cut_outputs" in r["summary"]]
    items = []
    for r in checked:
      summary = r["summary"]
      if not summary["num_cut_outputs"]:
        continue
      setting = paper_mnist.setting_of(r)
      items.append(
        self.fill(
          "paper_mnist_cut_run",
          table=tables[setting],
          model=names.MODELS[setting[0]],
          setting=self._setting(index[setting]),
          seed=r["tags"]["seed"],
          error=pct(runs.test_error(r)),
          count=summary["num_cut_outputs"],
          outputs=", ".join(map(str, summary["cut_outputs"])),
          train_accuracy=f"{100 * r['metrics'][-1]['train_accuracy']:.2f}",
        )
      )
    if not items:
      return ""
    return self.fill(
      "paper_mnist_cut",
      items="\n".join(items),
      checked=len(checked),
      reported=len(reported),
    )

  @staticmethod
  def _setting(row: dict) -> str:
    """``'dense'``, ``'SNIP 98%'``, ``'RN init, SNIP 90%'``, ``'|D| = 10, SNIP 90%'``."""
    if row["sparsity"] == 0:
      return "dense"
    setting = f"{names.CRITERIA[row['criterion']]} {percent(row['sparsity'])}"
    if "+adam+D" in row["recipe"]:
      return f"|D| = {row['score_examples']:,}, {setting}"
    if "+adam+" in row["recipe"]:
      return f"{names.INITS[row['init']]} init, {setting}"
    return setting

  @staticmethod
  def _fit(row: dict) -> dict[str, str]:
    return {
      "train_accuracy": f"{100 * row['final_train_accuracy_mean']:.2f}",
      "train_loss": f"loss {row['final_train_loss_mean']:.4f}",
    }

  def _versus(self, row: dict) -> list[str]:
    """Ours, the paper's number, the difference and the verdict of a row; a verdict says how many
    of the row's seeds diverged (left out of its mean) and how many masks cut outputs off the
    input (their errors make the spread)."""
    paper = paper_mnist.paper_number(row)
    diff = round(100 * row["test_error_mean"] - paper, 2) + 0.0 if row["n"] else math.nan
    verdict = paper_mnist.verdict(row)
    if verdict and row["diverged_runs"]:  # Its mean is of the others: the verdict says so.
      runs_made = row["n"] + row["diverged_runs"]
      verdict += f"; {row['diverged_runs']} of {runs_made} seeds diverged"
    if verdict and row["cut_output_runs"]:
      verdict += f"; {row['cut_output_runs']} of {row['n']} seeds cut outputs (below)"
    return [
      self._cell(row),
      f"{paper:g}",
      "-" if math.isnan(diff) else f"{diff:+.2f}",
      verdict,
    ]

  def _table2(self, index) -> str:
    table = []
    for model, recipe, criterion, s in paper_mnist.table_settings("Table 2"):
      row = index.get((model, recipe, criterion, s))
      if row is None:
        continue
      rand = index.get((model, recipe, "random", s))
      table.append(
        [
          names.MODELS[model],
          self._setting(row),
          names.RECIPES[recipe],
          *self._versus(row),
          "" if s == 0 else self._cell(rand),
        ]
      )
    return self.fill("paper_mnist_table2", rows=runs.markdown_rows(table)) if table else ""

  def _table3(self, index) -> str:
    table = []
    for setting in paper_mnist.table_settings("Table 3"):
      if (row := index.get(setting)) is not None:
        model, recipe = setting[:2]
        table.append(
          [names.MODELS[model], self._setting(row), names.RECIPES[recipe], *self._versus(row)]
        )
    return self.fill("paper_mnist_table3", rows=runs.markdown_rows(table)) if table else ""

  def _table4(self, index) -> str:
    table = [
      [names.MODELS[model], names.INITS[at], *cells]
      for (model, at), cells in self._ablation_rows(index, "Table 4")
    ]
    if not table:
      return ""
    return self.fill(
      "paper_mnist_table4",
      rows=runs.markdown_rows(table),
      adam=self._adam("Table 4"),
      **self._budget(),
    )

  def _dataset_size(self, index) -> str:
    table = [[f"{at:,}", *cells] for (_, at), cells in self._ablation_rows(index, "the |D| study")]
    if not table:
      return ""
    return self.fill(
      "paper_mnist_dataset_size",
      rows=runs.markdown_rows(table),
      adam=self._adam("the |D| study"),
      overlap=self._dataset_size_overlap(),
      **self._budget(),
    )

  def _dataset_size_overlap(self) -> str:
    """How the |D| study's masks differ (:data:`paper_mnist.OVERLAP_CSV`; '' before it is
    written): each smaller |D|'s IoU with the largest's, mean ± std over seeds."""
    path = self.results / "paper_mnist" / paper_mnist.OVERLAP_CSV
    if not path.exists():
      return ""
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    by_size = runs.group(rows, lambda r: int(r["score_examples"]))
    largest = max(by_size)
    overlaps = []
    for size, group in sorted(by_size.items()):
      if size != largest:
        iou = runs.Stat.of(float(r["iou_with_largest"]) for r in group)
        overlaps.append(f"{iou.mean:.2f} ± {iou.std:.2f} (|D| = {size:,})")
    return self.fill(
      "paper_mnist_dataset_size_overlap",
      largest=f"{largest:,}",
      overlaps=and_list(overlaps),
      n=len(by_size[largest]),
      file=rel(path, self.base),
    )

  def _ablation_rows(self, index, table: str) -> list[tuple[tuple, list[str]]]:
    """``((model, init or |D|), cells)`` of each row of an ablation ``table`` that has runs:
    :meth:`_versus` (or 'not run yet') and the same setting at the first budget."""
    rows = []
    for setting in paper_mnist.table_settings(table):
      model, recipe, criterion, sparsity = setting
      row = index.get(setting)
      first = index.get((model, f"{recipe}+{paper_mnist.FIRST_BUDGET}", criterion, sparsity))
      if row is None and first is None:
        continue
      at = paper_mnist.ablation_at(recipe)
      if row is None:
        paper = paper_mnist.paper_number({**first, "recipe": recipe})
        versus = ["not run yet", f"{paper:g}", "-", ""]
      else:
        versus = self._versus(row)
      rows.append(((model, at), [*versus, self._cell(first)]))
    return rows

  def _adam(self, table: str) -> str:
    """How an ablation ``table`` trains: :data:`paper_mnist.ADAM` over each of its networks'
    recipes."""
    models = dict.fromkeys(model for model, *_ in paper_mnist.table_settings(table))
    return self.fill(
      "paper_mnist_adam",
      learning_rate=f"{paper_mnist.ADAM['learning_rate']:g}",
      choices=self._recipes_of(models),
      **self._budget(),
    )

  @staticmethod
  def _budget() -> dict[str, int]:
    """The ablations' first budget (:data:`paper_mnist.FIRST_BUDGET`), for the templates."""
    return {"first_epochs": paper_mnist.PROBES[paper_mnist.FIRST_BUDGET]["num_epochs"]}

  def _recipes_of(self, models) -> str:
    """``'LeNet-300-100 with the paper's text and ...'``: each network's reported recipe."""
    return and_list(
      self.fill(
        "paper_mnist_choice", model=names.MODELS[m], recipe=names.RECIPES[paper_mnist.reported(m)]
      )
      for m in models
    )

  # ------------------------------------------------------------------------------------------
  # 1. Sparsity sweep.

  def sweep(self) -> tuple[str, dict]:
    """Section 1, and what the sweep finds (:func:`studies.sweep.findings`)."""
    out = self.results / "sweep"
    records = runs.read_records(out)
    rows = sweep.write_outputs(out, records)
    if not rows:
      return self.missing("1. Sparsity sweep", "sweep"), {}
    found = sweep.findings(rows)
    # The recipe is the config file's (the paper's); budgets override its length.
    recipe = runs.Run(records[0]["name"], records[0]["config"], {}, {}).make_config()
    criteria = sweep.ordered(r["criterion"] for r in rows)
    baselines = [names.CRITERIA.get(c, c) for c in criteria if c not in (sweep.DENSE, "snip")]
    sparsities = sorted({r["sparsity"] for r in rows if r["criterion"] != sweep.DENSE})
    text = self.fill(
      "sweep",
      baselines=and_list(baselines),
      sparsities=and_list(f"{100 * s:g}" for s in sparsities),
      optimizer=names.OPTIMIZERS[recipe.optimizer],
      momentum=number(recipe.momentum),
      learning_rate=number(recipe.learning_rate),
      lr_decay_factor=number(recipe.lr_decay_factor),
      weight_decay=number(recipe.weight_decay),
      batch_size=recipe.batch_size,
      budgets="; ".join(self._sweep_budgets(records, recipe)),
      full=self._sweep_full(records),
      tables="\n\n".join(self._sweep_tables(rows, found)) + "\n",
      figures="\n\n".join(
        self.fill(
          "sweep_figure", dataset=dataset, path=rel(out / f"sweep_{dataset}.png", self.base)
        )
        for dataset in dict.fromkeys(r["dataset"] for r in rows)
      )
      + "\n",
      findings="\n".join(self._sweep_findings(records, rows, found)),
    )
    return text + "\n", found

  def _sweep_budgets(self, records, recipe) -> list[str]:
    """Each model's CPU budget, from the first of its runs (not the full-budget ones)."""
    budgets = []
    firsts = runs.group([r for r in records if not sweep.is_full(r)], lambda r: r["tags"]["model"])
    for model, recs in firsts.items():
      summary, config = recs[0]["summary"], runs.Run.from_record(recs[0]).make_config()
      learning_rate = ""
      if config.learning_rate != recipe.learning_rate:
        learning_rate = self.fill(
          "sweep_budget_learning_rate", learning_rate=number(config.learning_rate)
        )
      budgets.append(
        self.fill(
          "sweep_budget",
          model=names.MODELS.get(model, model),
          epochs=summary["epochs"],
          steps=f"{summary['steps']:,}",
          decay_every=f"{config.lr_decay_every_steps:,}",
          learning_rate=learning_rate,
        )
      )
    return budgets

  def _sweep_full(self, records) -> str:
    """The sentence on the full-budget runs ('' if there are none)."""
    full = [r for r in records if sweep.is_full(r)]
    if not full:
      return ""
    summary, config = full[0]["summary"], runs.Run.from_record(full[0]).make_config()
    criteria = sweep.ordered(r["tags"]["criterion"] for r in full)
    return self.fill(
      "sweep_full",
      model=names.MODELS.get(summary["model"], summary["model"]),
      sparsity=f"{max(r['tags']['sparsity'] for r in full):.0%}",
      criteria=", ".join(names.CRITERIA.get(c, c) for c in criteria),
      epochs=summary["epochs"],
      steps=f"{summary['steps']:,}",
      decay_every=f"{config.lr_decay_every_steps:,}",
    )

  def _sweep_tables(self, rows, found) -> list[str]:
    """One table per dataset, model and budget, with the paper's numbers beside."""
    blocks = []
    tables = runs.group(rows, lambda r: (r["dataset"], r["model"], r["epochs"]))
    for (dataset, model, epochs), group in tables.items():
      sparsities = sorted({r["sparsity"] for r in group if r["criterion"] != sweep.DENSE})
      dense = next(r for r in group if r["criterion"] == sweep.DENSE)
      table_rows = []
      for criterion in sweep.ordered(r["criterion"] for r in group if r["criterion"] != "dense"):
        cells = []
        for s in sparsities:
          r = next((x for x in group if x["criterion"] == criterion and x["sparsity"] == s), None)
          if r is None:
            cells.append("-")
            continue
          cell = pm(r, "test_error") if r["n"] else "-"
          if r["collapsed_runs"]:
            cell += self.fill("sweep_collapsed_cell", count=r["collapsed_runs"], n=r["n"])
          if r["chance_runs"]:
            cell += self.fill("sweep_chance_cell", count=r["chance_runs"], n=r["n"])
          if r["diverged_runs"]:
            total = r["n"] + r["diverged_runs"]
            cell += self.fill("sweep_diverged_cell", count=r["diverged_runs"], total=total)
          cells.append(cell)
        ns = sorted({x["n"] for x in group if x["criterion"] == criterion})
        n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        table_rows.append([f"{criterion} (n={n})", *cells])
      block = self.fill(
        "sweep_table",
        model=names.MODELS.get(model, model),
        dataset=dataset,
        epochs=plural(epochs, "epoch"),
        dense=pm(dense, "test_error"),
        n=dense["n"],
        columns=" | ".join(self.fill("sweep_column", sparsity=f"{s:.0%}") for s in sparsities),
        align=align_right(len(sparsities)),
        rows=runs.markdown_rows(table_rows),
      )
      if model in sweep.PAPER:
        block += "\n\n" + self._sweep_paper(dataset, model, epochs, dense, found)
      blocks.append(block)
    return blocks

  def _sweep_paper(self, dataset, model, epochs, dense, found) -> str:
    s, paper_snip, paper_dense = sweep.PAPER[model]
    f = found.get((dataset, model, epochs, s))
    ours = self.fill("sweep_not_run")
    if f:
      ours = self.fill(
        "sweep_ours",
        dataset=dataset,
        snip=pct(f["snip"]),
        dense=pct(f["dense"]),
        gap=f"{100 * f['gap']:+.2f}",
        random=pct(f["random"]),
      )
    return self.fill(
      "sweep_paper",
      sparsity=f"{s:.0%}",
      paper_snip=pct(paper_snip, 1),
      paper_dense=pct(paper_dense, 1),
      paper_gap=f"{100 * (paper_snip - paper_dense):+.1f}",
      ours=ours,
      dense=pct(dense["test_error_mean"]),
    )

  def _sweep_findings(self, records, rows, found) -> list[str]:
    items = [
      self.fill(
        "sweep_finding",
        model=names.MODELS.get(model, model),
        dataset=dataset,
        epochs=epochs,
        sparsity=f"{s:.0%}",
        snip=pct(f["snip"]),
        snip_std=pct(f["snip_std"]),
        n=f["n"],
        gap=f"{100 * f['gap']:+.2f}",
        dense=pct(f["dense"]),
        vs_random=f"{100 * f['vs_random']:.2f}",
        random=pct(f["random"]),
      )
      for (dataset, model, epochs, s), f in found.items()
    ]

    def where(r) -> dict:
      return {
        "model": names.MODELS.get(r["model"], r["model"]),
        "criterion": r["criterion"],
        "sparsity": f"{r['sparsity']:.0%}",
        "epochs": r["epochs"],
        "n": r["n"],
      }

    collapsed = [r for r in rows if r["collapsed_runs"]]
    if collapsed:
      cases = [
        self.fill(
          "sweep_collapsed_case",
          **where(r),
          count=r["collapsed_runs"],
          layers=r["collapsed_layers"],
        )
        for r in collapsed
      ]
      item = self.fill("sweep_collapsed", cases="; ".join(cases))
      if any(r["model"] == "lenet300" and r["criterion"] == "magnitude" for r in collapsed):
        item += self.fill("sweep_magnitude_collapse")
      items.append(item)
    failed = [r for r in rows if r["chance_runs"]]
    if failed:
      cases = [
        self.fill(
          "sweep_chance_case",
          **where(r),
          count=r["chance_runs"],
          loss=f"{r['chance_first_epoch_loss_max']:.1f}",
        )
        for r in failed
      ]
      items.append(self.fill("sweep_chance", cases="; ".join(cases)))
    items.append(self.fill("sweep_cost", runs=len(records), worker_time=worker_time(records)))
    return items

  # ------------------------------------------------------------------------------------------
  # 2. Random labels.

  def random_labels(self) -> tuple[str, list, list]:
    """Section 2, the aggregated rows and the records."""
    out = self.results / "random_labels"
    records = runs.read_records(out)
    rows = random_labels.write_outputs(out, records)
    if not rows:
      return self.missing("2. Random labels", "random_labels"), [], []
    summary, config = records[0]["summary"], runs.Run.from_record(records[0]).make_config()
    table = [
      [
        names.DATASETS.get(r["dataset"], r["dataset"]),
        r["setting"],
        f"{r['final_train_loss_mean']:.4f} ± {r['final_train_loss_std']:.4f}",
        pm(r, "final_train_accuracy", 1),
        r["n"],
      ]
      for r in rows
    ]
    text = self.fill(
      "random_labels",
      model=names.MODELS.get(summary["model"], summary["model"]),
      train_examples=f"{summary['train_examples']:,}",
      datasets=and_list(
        names.DATASETS.get(d, d) for d in dict.fromkeys(r["dataset"] for r in rows)
      ),
      epochs=summary["epochs"],
      steps=f"{summary['steps']:,}",
      optimizer=names.OPTIMIZERS[config.optimizer],
      momentum=number(config.momentum),
      learning_rate=number(config.learning_rate),
      batch_size=config.batch_size,
      sparsity=f"{max(r['summary']['target_sparsity'] for r in records):.0%}",
      rows=runs.markdown_rows(table),
      figure=rel(out / "random_labels.png", self.base),
      runs=len(records),
      worker_time=worker_time(records),
    )
    return text + "\n", rows, records

  # ------------------------------------------------------------------------------------------
  # 3. Mask pictures.

  def mask_pictures(self) -> tuple[str, dict | None]:
    """Section 3, and the contents of ``mask_pictures.json``."""
    out = self.results / "mask_pictures"
    info = mask_pictures.write_outputs(out)
    if info is None:
      return self.missing("3. What SNIP keeps", "mask_pictures"), None
    sparsities = info["sparsities"]
    corr_rows = []
    for dataset in info["datasets"]:
      corr = info["correlation_with_mean_image"][dataset]
      per_class = [sum(row[i] for row in corr[1:]) / len(corr[1:]) for i in range(len(sparsities))]
      corr_rows.append([mask_pictures.TITLES[dataset], *[f"{c:.2f}" for c in per_class]])
    with np.load(out / "counts.npz") as arrays:
      pixels = math.prod(arrays[f"{info['datasets'][0]}_counts"].shape[-2:])
    text = self.fill(
      "mask_pictures",
      command=info["command"],
      model=names.MODELS.get(info["model"], info["model"]),
      init=names.INITS.get(info["init"], info["init"]),
      seed=info["seed"],
      batch=info["batch"],
      figures="\n\n".join(
        self.fill(
          "mask_pictures_figure",
          dataset=dataset,
          path=rel(out / f"mask_pictures_{dataset}.png", self.base),
        )
        for dataset in info["datasets"]
      )
      + "\n",
      pixels=f"{pixels:,}",
      classes=len(info["groups"]) - 1,
      columns=" | ".join(f"{s:.0%}" for s in sparsities),
      align=align_right(len(sparsities)),
      rows=runs.markdown_rows(corr_rows),
    )
    return text + "\n", info

  # ------------------------------------------------------------------------------------------
  # 4. Ablations.

  def ablations(self) -> str:
    out = self.results / "ablations"
    records = runs.read_records(out)
    rows = ablations.write_outputs(out, records)
    if not rows:
      return self.missing("4. Ablations", "ablations")
    dense = next(r for r in rows if r["study"] == "reference")
    pruned = next(r for r in records if r["tags"]["study"] != "reference")
    summary, config = pruned["summary"], runs.Run.from_record(pruned).make_config()

    def cells(r):
      return [pm(r, "test_error"), f"{100 * r['gap_to_dense']:+.2f}", r["n"]]

    init_rows = [[r["init"], *cells(r)] for r in rows if r["study"] in ("init", "both")]
    order = list(names.INITS.values())
    init_rows.sort(key=lambda row: order.index(row[0]))
    batch_rows = [
      [f"{r['score_examples']:,}", *cells(r)] for r in rows if r["study"] in ("batch", "both")
    ]
    batch_rows.sort(key=lambda row: int(row[0].replace(",", "")))
    text = self.fill(
      "ablations",
      model=names.MODELS.get(summary["model"], summary["model"]),
      dataset=names.DATASETS.get(summary["dataset"], summary["dataset"]),
      sparsity=f"{summary['target_sparsity']:.0%}",
      optimizer=names.OPTIMIZERS[config.optimizer],
      learning_rate=number(config.learning_rate),
      batch_size=config.batch_size,
      epochs=summary["epochs"],
      dense=pm(dense, "test_error"),
      n=dense["n"],
      init_rows=runs.markdown_rows(init_rows),
      batch_rows=runs.markdown_rows(batch_rows),
      runs=len(records),
      worker_time=worker_time(records),
    )
    return text + "\n"

  # ------------------------------------------------------------------------------------------
  # 6. Comparisons.

  def comparisons(self) -> str:
    """Every method of ``studies/comparisons.py`` per network and dataset: test error at each
    sparsity and the training cost; the figures of error against cost."""
    out = self.results / "comparisons"
    records = runs.read_records(out)
    rows = comparisons.write_outputs(out, records)
    heading = "6. When is SNIP the right choice? Comparisons"
    if not rows:
      return self.missing(heading, "comparisons")
    tables = []
    for (model, dataset), mine in runs.group(rows, lambda r: (r["model"], r["dataset"])).items():
      dense = next((r for r in mine if r["method"] == comparisons.DENSE), None)
      sparsities = sorted({r["sparsity"] for r in mine if r["method"] != comparisons.DENSE})
      cell = {(r["method"], r["sparsity"]): r for r in mine}
      table_rows = []
      for method in comparisons.METHODS:
        found = [cell.get((method, s)) for s in sparsities]
        if not any(found):
          continue
        costs = [r["cost_epochs"] for r in found if r]
        low, high = min(costs), max(costs)
        table_rows.append(
          [
            f"{comparisons.METHOD_NAMES[method]} (`{method}`)",
            *(self._comparison_cell(r) for r in found),
            f"{low:g}" if low == high else f"{low:g} to {high:g}",
          ]
        )
      tables.append(
        self.fill(
          "comparisons_table",
          model=names.MODELS.get(model, model),
          dataset=names.DATASETS.get(dataset, dataset),
          dense=pm(dense, "test_error") if dense else "-",
          n=dense["n"] if dense else 0,
          sparsity_headers=" | ".join(percent(s) for s in sparsities),
          sparsity_align="|".join(["---:"] * len(sparsities)),
          rows=runs.markdown_rows(table_rows),
        )
      )
    paper = self._paper_table1(rows)
    if paper:
      tables.insert(0, paper)
    figures = []
    for s in sorted({r["sparsity"] for r in rows if r["method"] != comparisons.DENSE}):
      link = rel(out / f"comparisons_{s:g}.png", self.base)
      figures.append(f"![error against training cost, {percent(s)}]({link})")
    epochs = comparisons.BUDGET_EPOCHS
    schedule = comparisons.dynamic_schedule("gmp", epochs, quick=False)
    return (
      self.fill(
        "comparisons",
        epochs=epochs,
        decay_every=f"{comparisons.DECAY_EVERY_STEPS:,}",
        gmp_begin=schedule["mask_update_begin_epoch"],
        gmp_end=schedule["mask_update_end_epoch"],
        dst_end=schedule["mask_update_end_epoch"],
        runs=len(records),
        worker_time=worker_time(records),
        tables="\n\n".join(tables),
        figures="\n\n".join(figures),
      )
      + "\n"
    )

  @staticmethod
  def _comparison_cell(row: dict | None) -> str:
    """``'2.28 ± 0.13 (n=3)'``, with ``', 2 cut'`` when 2 of the runs cut outputs off."""
    if row is None:
      return "-"
    cut = f", {row['cut_runs']} cut" if row.get("cut_runs") else ""
    return f"{pm(row, 'test_error')} (n={row['n']}{cut})"

  def _paper_table1(self, rows) -> str:
    """The paper's Table 1 (MNIST), each row beside ours where we run its method's family:
    the dense reference, SNIP at the paper's sparsities, and iterative magnitude pruning after
    training at the measured sparsity nearest a magnitude-based row's. Empty without MNIST
    runs."""
    cell = {(r["model"], r["method"], r["sparsity"]): r for r in rows if r["dataset"] == "mnist"}
    if not cell:
      return ""
    models = ("lenet300", "lenet5")

    def ours(model, method, sparsity, named=False) -> str:
      row = cell.get((model, method, sparsity))
      if row is None:
        return "-"
      text = f"{pm(row, 'test_error')} (n={row['n']})"
      return f"{text} at {percent(sparsity)}" if named else text

    table = [
      [
        "dense reference",
        "-",
        *(
          part
          for m in models
          for part in ("-", f"{paper_mnist.PAPER_TABLE2[(m, 0.0)]:.1f}", ours(m, "dense", 0.0))
        ),
      ]
    ]
    for name, criterion, numbers in comparisons.PAPER_TABLE1:
      parts = []
      for m in models:
        sparsity, error = numbers[m]
        near = comparisons.nearest_sparsity(sparsity)
        mine = (
          ours(m, comparisons.PAPER_COUNTERPART, near, named=True)
          if criterion == "magnitude"
          else "-"
        )
        parts += [f"{sparsity:.1f}", f"{error:.1f}", mine]
      table.append([name, criterion, *parts])
    for k in range(2):  # The paper's two SNIP rows: each network at its two sparsities.
      parts = []
      for m in models:
        sparsity = paper_mnist.TABLE2[m][k]
        parts += [
          f"{100 * sparsity:.1f}",
          f"{paper_mnist.PAPER_TABLE2[(m, sparsity)]:.1f}",
          ours(m, "snip", sparsity),
        ]
      table.append(["SNIP", "connection sensitivity", *parts])
    return self.fill(
      "comparisons_paper_table1",
      rows=runs.markdown_rows(table),
      counterpart=comparisons.PAPER_COUNTERPART,
      epochs=comparisons.BUDGET_EPOCHS,
    )

  # ------------------------------------------------------------------------------------------
  # 5. Sparse export.

  def crossovers(self, report: dict) -> str:
    """Per model and batch size, where sparse inference overtakes dense: a bullet list."""
    items = []
    for c in report["crossovers"]:
      where = {"model": names.MODELS[c["model"]], "batch": f"{c['batch_size']:,}"}
      if c["from"] is None and not c["faster_at"]:
        item = self.fill(
          "crossover_slower", **where, ratio=f"{c['below_ratio']:.2f}", below=f"{c['below']:.1%}"
        )
      elif c["from"] is None:
        at = ", ".join(f"{s:.1%}" for s in c["faster_at"])
        item = self.fill("crossover_only", **where, sparsities=at)
      elif c["below"] is None:
        item = self.fill(
          "crossover_everywhere", **where, start=f"{c['from']:.1%}", ratio=f"{c['from_ratio']:.2f}"
        )
      else:
        item = self.fill(
          "crossover_from",
          **where,
          start=f"{c['from']:.1%}",
          ratio=f"{c['from_ratio']:.2f}",
          below=f"{c['below']:.1%}",
          below_ratio=f"{c['below_ratio']:.2f}",
        )
      items.append(item)
    return "\n".join(items)

  def sparse_export(self) -> tuple[str, dict | None]:
    """Section 5, and the contents of ``sparse_export.json``."""
    out = self.results / "sparse_export"
    path = out / "sparse_export.json"
    if not path.exists():
      return self.missing("5. Sparse export", "sparse_export"), None
    report = json.loads(path.read_text())
    results = report["results"]
    m = report["machine"]
    size_rows, speed_rows = [], []
    for r in results:
      d, mem, t = r["bytes_on_disk"], r["bytes_in_memory"], r["test"]
      size_rows.append(
        [
          names.MODELS[r["model"]],
          f"{r['sparsity']:.1%}",
          f"{r['kept']:,}",
          f"**{size_text(d['export'])}**",
          size_text(d["dense_msgpack"]),
          size_text(d["dense_npz_compressed"]),
          size_text(d["orbax_params"]),
          size_text(d["train_checkpoint"]),
          f"{d['export'] / d['dense_msgpack']:.1%} / {d['export'] / d['orbax_params']:.0%}",
          f"{size_text(mem['sparse'])} / {size_text(mem['dense'])}",
          f"{t['sparse_accuracy']:.4f} / {t['dense_accuracy']:.4f} ({t['predictions_differ']})",
          f"{t['max_abs_diff']:.1e}",
        ]
      )
      cells = []
      for speed in r["speed"]:
        dense_us = _us(speed["dense_seconds_per_example"]["median"])
        sparse_us = _us(speed["sparse_seconds_per_example"]["median"])
        cells += [f"{sparse_us} / {dense_us}", _ratio(speed["sparse_over_dense"])]
      speed_rows.append([names.MODELS[r["model"]], f"{r['sparsity']:.1%}", *cells])
    saved, bigger = [], []
    for r in results:
      d = r["bytes_on_disk"]
      smallest = min(d["dense_npz_compressed"], d["orbax_params"])
      saved.append(1 - d["export"] / smallest)
      if d["export"] >= smallest:
        bigger.append(
          self.fill(
            "sparse_export_larger_case",
            sparsity=f"{r['sparsity']:.1%}",
            model=names.MODELS[r["model"]],
            larger=f"{d['export'] / smallest - 1:.0%}",
          )
        )
    larger = self.fill("sparse_export_larger", cases=", ".join(bigger)) if bigger else ""
    # Where BCOO params take more memory than dense ones (below 2/3 sparsity).
    heavier = sorted(
      {
        r["sparsity"]
        for r in results
        if r["bytes_in_memory"]["sparse"] > r["bytes_in_memory"]["dense"]
      }
    )
    memory_larger = ""
    if heavier:
      memory_larger = self.fill(
        "sparse_export_memory_larger", sparsities=and_list(percent(s) for s in heavier)
      )
    batches = [s["batch_size"] for s in results[0]["speed"]]
    level_from = _level_from(results, batch_index=0)
    level = ""
    if level_from is not None:
      level = self.fill("sparse_export_level", sparsity=percent(level_from))
    # The runs measured, as their records in runs.jsonl give them.
    measured = {r["run"] for r in results}
    records = [rec for rec in runs.read_records(out) if rec["name"] in measured]
    epochs = {
      model: recs[0]["summary"]["epochs"]
      for model, recs in runs.group(records, lambda rec: rec["tags"]["model"]).items()
    }
    datasets = dict.fromkeys(rec["tags"]["dataset"] for rec in records)
    seeds = dict.fromkeys(rec["tags"]["seed"] for rec in records)
    text = self.fill(
      "sparse_export",
      command=report["command"],
      dataset=and_list(names.DATASETS.get(d, d) for d in datasets),
      seed=", ".join(str(seed) for seed in seeds),
      lenet300_epochs=epochs["lenet300"],
      lenet5_epochs=epochs["lenet5"],
      test_examples=f"{results[0]['test']['examples']:,}",
      size_rows=runs.markdown_rows(size_rows),
      saved=f"{max(saved):.0%}",
      larger=larger,
      memory_larger=memory_larger,
      rounds=report["rounds"],
      speed_columns=" | ".join(
        self.fill("sparse_export_speed_columns", batch=f"{b:,}") for b in batches
      ),
      speed_align=align_right(2 * len(batches)),
      speed_rows=runs.markdown_rows(speed_rows),
      crossovers=self.crossovers(report),
      level=level,
      cpu=m["cpu"],
      cores=m["cores"],
      jax=m["versions"]["jax"],
      minutes=f"{report['measure_seconds'] / 60:.0f}",
    )
    return text + "\n", report

  def readme_sparse_export(self, report: dict | None) -> str:
    """README's summary: sizes, memory and speed at the issue's four sparsities."""
    if report is None:
      return self.fill("readme_sparse_export_missing")
    rows = []
    for r in report["results"]:
      if r["sparsity"] not in README_EXPORT_SPARSITIES:
        continue
      d, mem = r["bytes_on_disk"], r["bytes_in_memory"]
      rows.append(
        [
          names.MODELS[r["model"]],
          f"{r['sparsity']:.0%}",
          size_text(d["export"]),
          size_text(d["dense_msgpack"]),
          size_text(d["orbax_params"]),
          f"{size_text(mem['sparse'])} / {size_text(mem['dense'])}",
          *[f"{s['sparse_over_dense']['median']:.2f}" for s in r["speed"]],
          f"{r['test']['sparse_accuracy']:.4f} / {r['test']['dense_accuracy']:.4f}",
        ]
      )
    batches = [s["batch_size"] for s in report["results"][0]["speed"]]
    return self.fill(
      "readme_sparse_export",
      time_columns=" | ".join(self.fill("readme_time_column", batch=f"{b:,}") for b in batches),
      time_align=align_right(len(batches)),
      rows=runs.markdown_rows(rows),
      crossovers=self.crossovers(report),
      command=report["command"],
    )

  # ------------------------------------------------------------------------------------------
  # 6. Not run here, and README's summary.

  def gpu(self) -> str:
    zoo = self.results / "model_zoo" / "models.json"
    step_time = self.fill("gpu_step_time_unmeasured")
    if zoo.exists():
      steps = [
        m["train_step_seconds"]
        for m in json.loads(zoo.read_text())["models"]
        if m["config"].endswith("_cifar10.py")
      ]
      if steps:
        span = f"{seconds(min(steps))}-{seconds(max(steps))} s"
        step_time = self.fill("gpu_step_time", seconds=span)
    s, snip, dense = PAPER_CIFAR["vgg_d"]
    text = self.fill(
      "gpu",
      step_time=step_time,
      rows="\n".join(
        self.fill("gpu_row", network=network, config=config) for network, config in GPU_CONFIGS
      ),
      sparsity=f"{s:.0%}",
      snip=pct(snip),
      dense=pct(dense),
    )
    return text + "\n"

  def readme_paper_results(
    self, found: dict, rl_records: list, info: dict | None, mnist_rows: list[dict]
  ) -> str:
    lines = self._readme_mnist(mnist_rows)
    for (dataset, model, epochs, s), f in found.items():
      if (dataset, model, s) == README_SWEEP:
        lines.append(
          self.fill(
            "readme_sweep",
            model=names.MODELS.get(model, model),
            dataset=names.DATASETS.get(dataset, dataset),
            sparsity=f"{s:.0%}",
            epochs=epochs,
            n=f["n"],
            snip=pct(f["snip"]),
            dense=pct(f["dense"]),
            gap=f"{100 * f['gap']:+.2f}",
            random=pct(f["random"]),
          )
        )
    # The shuffled-label settings without weight decay: the dense one and the pruned one.
    shuffled = {
      sparsity > 0: name
      for name, sparsity, shuffle, weight_decay in random_labels.SETTINGS
      if shuffle and not weight_decay
    }
    rows = random_labels.aggregate(rl_records)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
      by = {r["setting"]: r for r in rows if r["dataset"] == dataset}
      if shuffled.get(False) not in by or shuffled.get(True) not in by:
        continue
      dense, pruned = by[shuffled[False]], by[shuffled[True]]
      pruned_sparsity = next(
        r["summary"]["target_sparsity"]
        for r in rl_records
        if r["tags"]["setting"] == shuffled[True]
      )
      lines.append(
        self.fill(
          "readme_random_labels",
          dataset=names.DATASETS.get(dataset, dataset),
          steps=f"{dense['steps']:,}",
          train_examples=f"{dense['train_examples']:,}",
          dense_loss=f"{dense['final_train_loss_mean']:.3f}",
          dense_accuracy=pct(dense["final_train_accuracy_mean"], 1),
          pruned_loss=f"{pruned['final_train_loss_mean']:.3f}",
          pruned_accuracy=pct(pruned["final_train_accuracy_mean"], 1),
          sparsity=f"{pruned_sparsity:.0%}",
        )
      )
    mask_picture = ""
    if info and "mnist" in info["datasets"]:
      mask_picture = self.fill("readme_mask_picture") + "\n\n"
    return self.fill("readme_paper_results", findings="\n".join(lines), mask_picture=mask_picture)


def _us(duration: float) -> str:
  """Microseconds: ``'1,604'``, ``'51.2'``, ``'0.886'``."""
  us = 1e6 * duration
  return f"{us:,.0f}" if us >= 100 else f"{us:.3g}"


def _ratio(stats: dict) -> str:
  return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def _level_from(results: list[dict], batch_index: int) -> float | None:
  """The lowest measured sparsity from which, at every higher one and for every model, the
  min-max range of the sparse / dense time ratios at ``batch_index`` straddles 1."""
  level = None
  for sparsity in sorted({r["sparsity"] for r in results}, reverse=True):
    ratios = [r["speed"][batch_index]["sparse_over_dense"] for r in results]
    at = [q for r, q in zip(results, ratios, strict=True) if r["sparsity"] == sparsity]
    if not all(q["min"] < 1 < q["max"] for q in at):
      break
    level = sparsity
  return level


def write(results: Path, output: Path, readme: Path | None) -> None:
  """Writes RESULTS.md to ``output`` and the figures from the raw results in ``results``.

  Args:
    results: the raw results directory (``results/``).
    output: the RESULTS.md to write; its figure links are relative to its directory.
    readme: the README whose blocks ``paper-results`` and ``sparse-export`` to rewrite, or
      ``None``.
  """
  doc = Document(results, output.parent)
  sweep_text, found = doc.sweep()
  random_labels_text, _, rl_records = doc.random_labels()
  mask_pictures_text, info = doc.mask_pictures()
  export_text, export_report = doc.sparse_export()
  mnist_text, mnist_rows = doc.paper_mnist()
  output.write_text(
    doc.fill(
      "document",
      machine=machine(),
      paper_mnist=mnist_text,
      sweep=sweep_text,
      random_labels=random_labels_text,
      mask_pictures=mask_pictures_text,
      ablations=doc.ablations(),
      sparse_export=export_text,
      comparisons=doc.comparisons(),
      gpu=doc.gpu(),
    )
  )
  if readme is not None:
    block = doc.readme_paper_results(found, rl_records, info, mnist_rows)
    replace_block(readme, "paper-results", block)
    replace_block(readme, "sparse-export", doc.readme_sparse_export(export_report))
