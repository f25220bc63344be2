"""Which mode to score SNIP in on a model with BatchNorm and Dropout, and how far it moves the mask.

  python experiments/scoring_mode.py          # 3 seeds, ~10 min on a 2-core CPU
  python experiments/scoring_mode.py --quick  # plumbing check on a tiny budget (tests)

A user-style CNN on Fashion-MNIST, scored in inference mode, with batch statistics, and in the
training forward pass (dropout on); the overlaps of the masks and the test accuracy each reaches
(what and how: ``studies/scoring_mode.py``). Writes ``results/scoring_mode/records.jsonl`` (one
line per seed; a rerun measures only the seeds missing), ``scoring_mode.json`` (means over
seeds) and the README block ``scoring-mode``.

This file parses flags; the experiment is ``studies/scoring_mode.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from absl import app, flags

import runs
from report import machine, replace_block
from studies import scoring_mode

FLAGS = flags.FLAGS


def main(argv):
  del argv
  from snip_jax import data

  quick = FLAGS.quick
  out = runs.out_dir("scoring_mode")
  out.mkdir(parents=True, exist_ok=True)
  budget = scoring_mode.QUICK if quick else {}
  epochs = budget.get("epochs", scoring_mode.EPOCHS)
  train_examples = budget.get("train_examples", 10**9)
  sparsities = budget.get("sparsities", scoring_mode.SPARSITIES)
  seeds = budget.get("seeds", FLAGS.seeds)
  splits, _ = data.load_dataset("fashion_mnist")

  records_path = out / scoring_mode.RECORDS_FILE
  records = runs.read_records(out, scoring_mode.RECORDS_FILE)
  done = {r["seed"] for r in records}
  print(f"{len(done)} of {seeds} seeds already measured in {records_path}")
  for seed in range(seeds):
    if seed in done:
      continue
    record = scoring_mode.measure_seed(splits, seed, epochs, train_examples, sparsities)
    with records_path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    records.append(record)
    print(f"seed {seed}: {record['seconds']:.0f} s, IoU {record['iou']}")

  command = "python experiments/scoring_mode.py" + (" --quick" if quick else "")
  info = {"command": command, "machine": machine(), "jax": jax.__version__, "epochs": epochs}
  summary = scoring_mode.summarise(sorted(records, key=lambda r: r["seed"]), info)
  (out / "scoring_mode.json").write_text(json.dumps(summary, indent=1) + "\n")
  text = scoring_mode.table(summary)
  if FLAGS["readme"].present or not quick:  # --quick leaves the README alone unless told.
    replace_block(Path(FLAGS.readme), "scoring-mode", text)
  print(text)


if __name__ == "__main__":
  runs.define_flags("scoring_mode", trains=False)
  flags.DEFINE_integer("seeds", scoring_mode.SEEDS, "Seeds 0..n-1.")
  flags.DEFINE_string(
    "readme", str(runs.ROOT / "README.md"), "README whose scoring-mode block to rewrite."
  )
  app.run(main)
