"""Runs the default experiment at a sparsity of 98% and dense, and writes the README's numbers.

  python experiments/default_results.py            # ~6 min on a 2-core CPU

Both runs use the default config (snip_jax/configs/default.py) unchanged except for the
sparsity (the dense run is --config.sparsity=0), trained afresh. Their results files go to
results/default/<run>/, a summary to results/default/results.json, and the table between the
markers in README.md is rewritten from that file (never typed by hand).
"""

import json
from pathlib import Path

from absl import app, flags

from report import machine, replace_block
from snip_jax import train

ROOT = Path(__file__).resolve().parents[1]
_OUT = flags.DEFINE_string("out", str(ROOT / "results" / "default"), "Output directory.")
_README = flags.DEFINE_string("readme", str(ROOT / "README.md"), "README to update.")

RUNS = {"snip98": 0.98, "dense": 0.0}
KEYS = (
  "sparsity",
  "num_kept",
  "num_prunable",
  "test_accuracy",
  "test_loss",
  "val_accuracy",
  "prune_seconds",
  "train_seconds",
  "epochs",
  "steps",
)


def table(results: dict) -> str:
  rows = [
    "| run | command | measured sparsity | kept / prunable | test accuracy | test error "
    "| train time |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, r in results["runs"].items():
    rows.append(
      f"| {name} | `{r['command']}` | {r['sparsity']:.4%} | {r['num_kept']:,} / "
      f"{r['num_prunable']:,} | {r['test_accuracy']:.4f} | {1 - r['test_accuracy']:.2%} | "
      f"{r['train_seconds']:.0f} s |"
    )
  rows.append("")
  rows.append(
    f"Produced by `{results['command']}` on {results['machine']} (JAX {results['jax']}); raw "
    "files in `results/default/`."
  )
  return "\n".join(rows)


def main(argv):
  del argv
  out = Path(_OUT.value)
  results = {
    "command": "python experiments/default_results.py",
    "machine": machine(),
    "runs": {},
  }
  for name, sparsity in RUNS.items():
    config = train.load_config("default")
    config.sparsity = sparsity
    summary = train.train_and_evaluate(config, str(out / name), overwrite=True)
    results["jax"] = summary["jax_version"]
    command = "python experiments/train.py" + ("" if sparsity else " --config.sparsity=0")
    results["runs"][name] = {"command": command, **{k: summary[k] for k in KEYS}}
  (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

  replace_block(Path(_README.value), "default-results", table(results))
  print(table(results))


if __name__ == "__main__":
  app.run(main)
