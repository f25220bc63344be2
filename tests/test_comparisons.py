"""The comparisons experiment: its runs, chains and costs, the waves of run_all, and --quick."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import runs
from snip_jax.train import config as config_lib
from studies import comparisons, results_doc

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_at_every_sparsity_after_one_dense_run():
  specs = comparisons.make_runs(3)
  per_setting = 1 + len(comparisons.SPARSITIES) * len(comparisons.METHODS)
  assert len(specs) == 3 * 2 * 2 * per_setting == 588
  assert len({r.name for r in specs}) == len(specs)
  names = [r.name for r in specs]
  for run in specs:
    assert run.overrides["num_epochs"] == comparisons.BUDGET_EPOCHS
    if run.source is not None:
      assert names.index(run.source) < names.index(run.name)  # Sources come first.
  by_name = {r.name: r for r in specs}
  ticket = by_name["lenet5/mnist/lottery_ticket/0.99/seed1"]
  assert ticket.source == "lenet5/mnist/lottery_ticket/0.98/seed1"
  assert ticket.overrides["rewind_to_step"] == 0 and ticket.overrides["criterion"] == "magnitude"
  first = by_name["lenet5/mnist/lottery_ticket/0.9/seed1"]
  assert first.source == "lenet5/mnist/dense/0.0/seed1"
  assert by_name[first.source].overrides["keep_checkpoint_step"] == 0
  after = by_name["lenet300/fashion_mnist/magnitude_after/0.98/seed0"]
  assert after.source == "lenet300/fashion_mnist/dense/0.0/seed0"
  assert after.overrides["learning_rate"] == 0.01
  # The paper's schedule (decay every 25k of 54k steps) compressed to the 20-epoch budget.
  assert comparisons.DECAY_EVERY_STEPS == 5_000
  for run in specs:
    overrides = run.overrides
    assert (overrides["lr_decay_every_steps"], overrides["lr_decay_factor"]) == (5_000, 0.1)
  rigl = by_name["lenet300/mnist/rigl/0.95/seed2"].overrides
  assert (rigl["dynamic"], rigl["mask_update_every"], rigl["mask_update_end_epoch"]) == (
    "rigl",
    100,
    15,
  )
  assert by_name["lenet300/mnist/gmp/0.9/seed0"].overrides["mask_update_begin_epoch"] == 2
  lenet5 = by_name["lenet5/mnist/snip_reinit/0.9/seed0"].overrides
  assert lenet5["reinit_after_pruning"] is False and lenet5["sanity_check"] == "reinit"
  for run in specs:  # Every config is valid (the chains' sources are set when they run).
    config_lib.validate_config(run.make_config("/nowhere"))
  assert "--config.prune_trained=<out>/runs/lenet5/mnist/lottery_ticket/0.98/seed1" in (
    ticket.command()
  )


def record(name, tags, overrides, summary, diverged=False):
  rec = {"name": name, "tags": tags, "overrides": overrides, "summary": summary}
  return {**rec, "diverged": {"step": 3}} if diverged else rec


def test_an_unknown_network_or_dataset_is_refused_with_the_choices():
  with pytest.raises(ValueError, match="Unknown network 'lenet7'; choose from"):
    comparisons.make_runs(1, models=["lenet7"])
  with pytest.raises(ValueError, match="Unknown dataset 'cifar10'; choose from"):
    comparisons.make_runs(1, datasets=["cifar10"])


def test_aggregate_counts_pretraining_in_the_cost():
  tags = {"model": "lenet300", "dataset": "mnist", "method": "lottery_ticket", "sparsity": 0.9}
  summary = {"test_accuracy": 0.98, "steps": 200, "pretrain_steps": 400, "train_seconds": 2.0}
  records = [
    record("a", {**tags, "seed": 0}, {"num_epochs": 2}, {**summary, "pretrain_seconds": 6.0}),
    record("b", {**tags, "seed": 1}, {"num_epochs": 2}, {**summary, "test_accuracy": 0.96}),
  ]
  (row,) = comparisons.aggregate(records)
  assert row["cost_epochs"] == 6.0  # 2 epochs of its own after 4 of pretraining.
  assert row["test_error_mean"] == pytest.approx(0.03) and row["n"] == 2
  assert row["cost_seconds_mean"] == pytest.approx((8.0 + 2.0) / 2)


def test_the_papers_table_1_stands_beside_ours_on_mnist(tmp_path):
  def rec(dataset, method, sparsity, seed, error, pretrain_steps=0):
    tags = {"model": "lenet300", "dataset": dataset, "method": method, "sparsity": sparsity}
    summary = {"test_accuracy": 1 - error, "steps": 20, "train_seconds": 1.0}
    summary["pretrain_steps"] = pretrain_steps
    name = comparisons.run_name("lenet300", dataset, method, sparsity, seed)
    rec = record(name, {**tags, "seed": seed}, {"num_epochs": 20}, summary)
    return {**rec, "wall_seconds": 60.0, "cpu": "Test CPU", "cores": 2}

  records = [
    rec("mnist", "dense", 0.0, 0, 0.014),
    rec("mnist", "dense", 0.0, 1, 0.016),
    rec("mnist", "snip", 0.95, 0, 0.019),
    rec("mnist", "magnitude_iterative", 0.9, 0, 0.017),
    rec("mnist", "magnitude_iterative", 0.98, 0, 0.025, pretrain_steps=40),
    rec("mnist", "random", 0.98, 0, 0.40),
    rec("mnist", "random", 0.98, 1, 0.03),
    rec("fashion_mnist", "snip", 0.95, 0, 0.15),  # Not MNIST: not in Table 1's company.
  ]
  records[-3]["summary"].update(num_cut_outputs=3, cut_outputs=[0, 1, 7])
  records[-2]["summary"].update(num_cut_outputs=0, cut_outputs=[])
  out = tmp_path / "results" / "comparisons"
  out.mkdir(parents=True)
  (out / runs.RUNS_FILE).write_text("".join(f"{json.dumps(r)}\n" for r in records))
  text = results_doc.Document(tmp_path / "results", tmp_path).comparisons()
  table = text.split("### The paper's Table 1 beside ours (MNIST)")[1].split("###")[0]
  assert "| dense reference | - | - | 1.7 | 1.50 ± 0.14 (n=2) | - | 0.9 | - |" in table
  # LWC at 91.7%: ours at 90%; DNS at 98.2%: ours at 98%; LC at 99%: not measured.
  assert (
    "| LWC (Han et al. 2015) | magnitude | 91.7 | 1.6 | 1.70 ± 0.00 (n=1) at 90% | 91.7 | 0.8 | - |"
    in table
  )
  assert "| DNS (Guo et al. 2016) | magnitude | 98.2 | 2.0 | 2.50 ± 0.00 (n=1) at 98% |" in table
  assert "| LC (Carreira-Perpiñán & Idelbayev 2018) | magnitude | 99.0 | 3.2 | - |" in table
  assert "| OBD (LeCun et al. 1990) | Hessian | 92.0 | 2.0 | - | 92.0 | 2.7 | - |" in table
  assert (
    "| SNIP | connection sensitivity | 95.0 | 1.6 | 1.90 ± 0.00 (n=1) | 98.0 | 0.8 | - |" in table
  )
  assert "| SNIP | connection sensitivity | 98.0 | 2.4 | - | 99.0 | 1.1 | - |" in table
  assert table.count("\n| ") == 1 + 1 + len(comparisons.PAPER_TABLE1) + 2  # Header, rows.
  # Our own table: a method's cost is a range where it differs between sparsities.
  assert (
    "| magnitude pruning after training, iterative (`magnitude_iterative`) | 1.70 ± 0.00 (n=1) "
    "| - | 2.50 ± 0.00 (n=1) | 20 to 60 |" in text
  )
  assert set(comparisons.METHOD_NAMES) == set(comparisons.METHODS)
  # One of the two random runs at 98% cut classes off the input.
  assert "| random at initialisation (`random`) | - | - | 21.50 ± 26.16 (n=2, 1 cut) |" in text
  assert comparisons.nearest_sparsity(99.6) == 0.99 and comparisons.nearest_sparsity(92) == 0.9


def test_run_all_trains_sources_first(tmp_path, monkeypatch):
  order = []

  def fake(run, out):
    order.append(run.name)
    return {"name": run.name, "summary": {"test_accuracy": 1.0}, "wall_seconds": 0.0}

  monkeypatch.setattr(runs, "_train_one", fake)
  specs = [
    runs.Run("child", "default", {}, {}, source="parent"),
    runs.Run("parent", "default", {}, {}),
    runs.Run("grandchild", "default", {}, {}, source="child"),
  ]
  runs.run_all(specs, tmp_path)
  assert order == ["parent", "child", "grandchild"]
  with pytest.raises(ValueError, match="pruned from a run that is not in the experiment"):
    runs.run_all([runs.Run("orphan", "default", {}, {}, source="nobody")], tmp_path / "x")


@pytest.mark.slow
def test_quick_comparisons_run_every_method(tmp_path):
  if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
    pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist).")
  out = tmp_path / "comparisons"
  command = [sys.executable, "experiments/comparisons.py", "--quick", f"--out={out}"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  records = runs.read_records(out)
  expected = comparisons.make_runs(1, True, models=["lenet300"], datasets=["fashion_mnist"])
  assert len(records) == len(expected) == 1 + len(comparisons.METHODS)
  by_method = {r["tags"]["method"]: r for r in records}
  assert by_method["lottery_ticket"]["source"] == "lenet300/fashion_mnist/dense/0.0/seed0"
  for rec in records:
    summary = rec["summary"]
    assert summary is not None, rec["name"]
    expected_kept = round(0.1 * 266_200) if rec["tags"]["sparsity"] else 266_200
    assert summary["num_kept"] == expected_kept, rec["name"]
  assert by_method["magnitude_after"]["summary"]["pretrain_steps"] > 0
  rows = (out / "comparisons.csv").read_text().splitlines()
  assert len(rows) == 1 + len(records)
  assert (out / "comparisons_0.9.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads(json.dumps(by_method["rigl"]["overrides"]))["dynamic"] == "rigl"
