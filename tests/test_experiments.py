"""The paper's experiments: every script's --quick mode end to end, resuming, RESULTS.md, tables.

The --quick runs check the plumbing on real Fashion-MNIST (a few steps on a slice of it), not
the numbers; the numbers are in RESULTS.md, made by the full runs.
"""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_IDX

import runs
from report import Fragments
from snip_jax import files
from studies import (
  ablations,
  mask_pictures,
  random_labels,
  results_doc,
  scoring_mode,
  sparse_export,
  sweep,
)

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

ROOT = Path(__file__).resolve().parents[1]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def start(script: str, *flags: str) -> subprocess.Popen:
  """``python experiments/SCRIPT.py FLAGS`` from the repository root, as documented (nothing
  added to the import path: the script finds its sibling modules by itself)."""
  return subprocess.Popen(
    [sys.executable, str(Path("experiments") / f"{script}.py"), *flags],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    cwd=ROOT,
  )


def finish(process: subprocess.Popen) -> str:
  out, _ = process.communicate(timeout=600)
  assert process.returncode == 0, out[-4000:]
  return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory, tiny_mnist) -> Path:
  """Every experiment's --quick outputs under one results directory (two scripts at a time)."""
  if not os.path.isdir(FASHION_MNIST_IDX):
    if os.environ.get("CI"):
      pytest.fail(f"{FASHION_MNIST_IDX} missing in CI: install dataset-fashion-mnist.")
    pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist).")
  from snip_jax import data

  root = tmp_path_factory.mktemp("quick")
  # mask_pictures reads both datasets from one data dir: the real Fashion-MNIST the other
  # scripts use (prepared in the default data dir) and, so that its MNIST path runs without the
  # real MNIST, the tiny random one.
  mask_data = root / "tfds"
  mask_data.mkdir()
  (mask_data / "fashion_mnist").symlink_to(
    Path(data.ensure_prepared("fashion_mnist")) / "fashion_mnist"
  )
  (mask_data / "mnist").symlink_to(Path(tiny_mnist) / "mnist")
  results = root / "results"
  pairs = [
    (("sweep", "--quick"), ("random_labels", "--quick")),
    (("ablations", "--quick"), ("mask_pictures", "--quick", f"--data_dir={mask_data}")),
    (("sparse_export", "--quick"), ("scoring_mode", "--quick")),
  ]
  for pair in pairs:
    processes = [start(script, *flags, f"--out={results / script}") for script, *flags in pair]
    for process in processes:
      finish(process)
  return results


def test_quick_runs_write_raw_results_csv_and_figures(quick):
  expected = {
    "sweep": len(
      sweep.make_runs(
        ["fashion_mnist"], ["lenet300", "lenet5"], ["snip", "random"], [0.98], 1, quick=True
      )
    ),
    "random_labels": len(random_labels.make_runs(1, quick=True)),
    "ablations": len(ablations.make_runs(1, quick=True)),
    "sparse_export": len(sparse_export.make_runs(quick=True)),
  }
  for name, count in expected.items():
    records = runs.read_records(quick / name)
    assert len(records) == count == len({r["name"] for r in records})
    for rec in records:
      # Each record is a finished run with its metrics, as the tables need.
      assert rec["metrics"] and 0 <= rec["summary"]["test_accuracy"] <= 1
      assert rec["summary"]["train_examples"] == rec["overrides"]["train_examples"]
  sweep_rows = (quick / "sweep" / "sweep.csv").read_text().splitlines()
  assert sweep_rows[0].startswith("dataset,model,criterion,sparsity,n,test_error_mean")
  assert len(sweep_rows) == 1 + 6
  labels_rows = (quick / "random_labels" / "random_labels.csv").read_text().splitlines()
  assert labels_rows[0].startswith("dataset,setting,n,")
  assert len(labels_rows) == 1 + 2 * 5  # Both datasets, every setting.
  assert len((quick / "ablations" / "ablations.csv").read_text().splitlines()) == 1 + 4
  shuffled = [
    r
    for r in runs.read_records(quick / "random_labels")
    if r["tags"]["setting"] == "dense, random labels"
  ]
  assert shuffled[0]["summary"]["random_labels"] is True
  info = json.loads((quick / "mask_pictures" / "mask_pictures.json").read_text())
  assert info["datasets"] == ["fashion_mnist", "mnist"]
  with np.load(quick / "mask_pictures" / "counts.npz") as arrays:
    counts = arrays["fashion_mnist_counts"]
  assert counts.shape == (11, len(mask_pictures.QUICK_SPARSITIES), 28, 28)
  for png in [
    "sweep/sweep_fashion_mnist.png",
    "random_labels/random_labels.png",
    "mask_pictures/mask_pictures_fashion_mnist.png",
    "mask_pictures/mask_pictures_mnist.png",
  ]:
    assert (quick / png).read_bytes()[:8] == PNG_MAGIC, png


def test_a_rerun_trains_nothing_and_keeps_the_raw_results(quick):
  before = (quick / "sweep" / "runs.jsonl").read_bytes()
  out = finish(start("sweep", "--quick", f"--out={quick / 'sweep'}"))
  assert "6 of 6 runs already done" in out and "0 to go" in out
  assert (quick / "sweep" / "runs.jsonl").read_bytes() == before


def test_make_results_writes_results_md_and_the_readme_block(quick, tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text(
    "# x\n<!-- paper-results:start -->\nold\n<!-- paper-results:end -->\n"
    "<!-- sparse-export:start -->\nold\n<!-- sparse-export:end -->\n"
  )
  output = quick / "RESULTS.md"
  finish(start("make_results", f"--results={quick}", f"--output={output}", f"--readme={readme}"))
  text = output.read_text()
  for heading in (
    "## 1. Sparsity sweep",
    "## 2. Random labels",
    "## 3. What SNIP keeps",
    "## 4. Ablations",
    "## 5. Sparse export",
    "## 6. When is SNIP the right choice",
    "## 7. Not run here",
  ):
    assert heading in text
  # Every figure it links exists, relative to RESULTS.md.
  links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
  assert len(links) == 4
  for link in links:
    assert (output.parent / link).read_bytes()[:8] == PNG_MAGIC
  block = readme.read_text()
  assert "\nold\n" not in block and "results/random_labels/random_labels.png" in block
  assert "Shuffled labels, Fashion-MNIST, 10 iterations on 500 images" in block
  assert "Shuffled labels, MNIST, 10 iterations on 500 images" in block
  assert "| LeNet-300-100 | 98% |" in block and "| LeNet-5-Caffe | 98% |" in block
  assert "python experiments/sparse_export.py --quick" in block


def test_quick_sparse_export_measures_every_run(quick):
  report = json.loads((quick / "sparse_export" / "sparse_export.json").read_text())
  assert [(r["model"], r["sparsity"]) for r in report["results"]] == [
    ("lenet300", 0.98),
    ("lenet5", 0.98),
  ]
  for r in report["results"]:
    assert r["test"]["examples"] == 10_000 and r["test"]["predictions_differ"] == 0
    assert r["test"]["sparse_accuracy"] == r["test"]["dense_accuracy"]
    assert r["kept"] == round(0.02 * r["prunable"])
    sizes = r["bytes_on_disk"]
    assert sizes["export"] < 0.05 * sizes["dense_msgpack"]
    assert r["bytes_in_memory"]["sparse"] < 0.1 * r["bytes_in_memory"]["dense"]
    assert [s["batch_size"] for s in r["speed"]] == [1, 1000]
    for s in r["speed"]:
      assert s["sparse_over_dense"]["n"] == sparse_export.QUICK_ROUNDS
      assert s["dense_seconds_per_example"]["median"] > 0
  assert len(report["crossovers"]) == 4
  rows = (quick / "sparse_export" / "sparse_export.csv").read_text().splitlines()
  assert len(rows) == 3 and rows[0].startswith("model,sparsity,kept,")


# --------------------------------------------------------------------------------------------
# The machinery and the arithmetic of the tables.


def test_stat_is_mean_and_sample_std():
  s = runs.Stat.of([0.1, 0.2, 0.3])
  assert s.n == 3 and s.mean == pytest.approx(0.2) and s.std == pytest.approx(0.1)
  assert s.pct() == "20.00 ± 10.00"
  assert runs.Stat.of([0.5]).std == 0.0
  assert runs.Stat.of([]).n == 0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_a_record_counts_the_cores_the_process_may_use():
  # Under `taskset -c 0` a conv net trains to other numbers (README): the record must say 1.
  code = "import os, report; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
  code += "print(report.cores())"
  env = {**os.environ, "PYTHONPATH": str(Path(runs.__file__).parent)}
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
  )
  assert result.stdout.strip() == "1"


def test_a_cost_names_the_cpus_its_runs_were_made_on():
  hour = {"wall_seconds": 1800.0}
  xeon = {**hour, "cpu": "Xeon", "cores": 2}
  assert results_doc.worker_time([xeon, xeon]) == "1.00 h of worker time on Xeon (2 cores)"
  # Records from before runs named their CPU are counted, not passed off as this machine's.
  assert results_doc.worker_time([xeon, xeon, hour]) == (
    "1.50 h of worker time: 2 runs on Xeon (2 cores) and 1 run on an unrecorded CPU (made "
    "before run records named theirs)"
  )


def test_corrupt_runs_file_names_the_line(tmp_path):
  (tmp_path / "runs.jsonl").write_text('{"name": "a"}\n{"name": "b", "tr\n')
  with pytest.raises(ValueError, match=r"runs.jsonl:2 is not valid JSON.*delete that line"):
    runs.read_records(tmp_path)


def test_run_specs_are_checked():
  bad = runs.Run("x", "lenet300_fashion_mnist", {"sparsity_typo": 0.5}, {})
  with pytest.raises(KeyError, match="has no field 'sparsity_typo'"):
    bad.make_config()
  good = runs.Run("x", "lenet300_fashion_mnist", {"sparsity": 0.5, "seed": 2}, {})
  assert good.make_config().sparsity == 0.5
  assert good.command().endswith("--config.sparsity=0.5 --config.seed=2")
  with pytest.raises(ValueError, match="unique"):
    runs.run_all([good, good], "/nonexistent")


def test_a_run_recorded_otherwise_than_asked_is_refused(tmp_path):
  """A changed run must not pass for its old result: the record's config, overrides and source
  are checked against the run, before anything trains."""
  made = runs.Run("x", "lenet300_fashion_mnist", {"sparsity": 0.9}, {})
  (tmp_path / "runs.jsonl").write_text(
    json.dumps({"name": "x", "config": made.config, "overrides": made.overrides}) + "\n"
  )
  asked = dataclasses.replace(made, overrides={"sparsity": 0.5})
  with pytest.raises(ValueError, match=r"records x made as .*0\.9.* now asks for .*0\.5"):
    runs.run_all([asked], tmp_path)
  assert runs.run_all([made], tmp_path)[0]["overrides"] == {"sparsity": 0.9}  # Nothing trains.


def test_a_record_cut_off_by_a_killed_write_is_left_out_and_cut(tmp_path):
  good = {"name": "x", "config": "lenet300_fashion_mnist", "overrides": {}}
  path = tmp_path / "runs.jsonl"
  path.write_text(json.dumps(good) + "\n" + '{"name": "y", "conf')
  with pytest.warns(UserWarning, match=r"runs.jsonl:2, the last line, was cut off"):
    assert [r["name"] for r in runs.read_records(tmp_path)] == ["x"]
  runs.run_all([runs.Run("x", "lenet300_fashion_mnist", {}, {})], tmp_path)
  assert path.read_text() == json.dumps(good) + "\n"  # The next record starts a line.


def test_one_experiment_process_per_output_directory(tmp_path):
  with (
    files.DirectoryLock(tmp_path, "Experiment output"),
    pytest.raises(files.LockedError, match=r"Experiment output .* is in use by pid"),
  ):
    runs.run_all([runs.Run("x", "lenet300_fashion_mnist", {}, {})], tmp_path)


def test_a_failing_run_stops_its_wave_with_its_error(quick, tmp_path):
  """With workers, a run that fails raises its own error once the runs in progress are done
  and recorded (a terminated pool hung: its workers' runs trap SIGTERM and live on)."""
  fast = {"num_epochs": 1, "train_examples": 500}
  wave = [
    runs.Run("good", "lenet300_fashion_mnist", fast, {}),
    runs.Run("bad", "lenet300_fashion_mnist", {**fast, "sparsity": 1.5}, {}),
  ]
  code = (
    "import pickle, sys, runs; "
    "runs.run_all(pickle.loads(bytes.fromhex(sys.argv[1])), sys.argv[2], workers=2)"
  )
  env = {**os.environ, "PYTHONPATH": str(ROOT / "experiments")}
  result = subprocess.run(
    [sys.executable, "-c", code, pickle.dumps(wave).hex(), str(tmp_path)],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode != 0
  assert "ValueError: sparsity must lie in [0, 1)" in result.stderr, result.stderr[-3000:]
  assert [r["name"] for r in runs.read_records(tmp_path)] == ["good"]


def fake_record(criterion, sparsity, seed, accuracy, collapsed=()):
  return {
    "name": f"{criterion}/{sparsity}/{seed}",
    "tags": {
      "dataset": "d",
      "model": "lenet300",
      "criterion": criterion,
      "sparsity": sparsity,
      "seed": seed,
    },
    "summary": {
      "test_accuracy": accuracy,
      "collapsed_layers": list(collapsed),
      "epochs": 3,
      "steps": 30,
      "train_examples": 100,
    },
  }


def test_sweep_aggregates_gaps_to_dense_and_collapses():
  records = [
    fake_record("dense", 0.0, 0, 0.90),
    fake_record("dense", 0.0, 1, 0.92),
    fake_record("snip", 0.98, 0, 0.88),
    fake_record("snip", 0.98, 1, 0.86),
    fake_record("random", 0.98, 0, 0.70),
    fake_record("random", 0.98, 1, 0.10, collapsed=["Dense_0/kernel"]),
    # A run whose loss became NaN: counted, not averaged; its epochs are its config's.
    {
      **fake_record("snip", 0.98, 2, 0.0),
      "config": "lenet300_fashion_mnist",
      "overrides": {"num_epochs": 3, "seed": 2},
      "summary": None,
      "diverged": {"step": 7, "message": "..."},
    },
  ]
  rows = {r["criterion"]: r for r in sweep.aggregate(records)}
  assert rows["snip"]["n"] == 2 and rows["snip"]["diverged_runs"] == 1
  assert rows["dense"]["diverged_runs"] == 0
  assert rows["dense"]["test_error_mean"] == pytest.approx(0.09)
  assert rows["snip"]["gap_to_dense"] == pytest.approx(0.13 - 0.09)
  assert rows["snip"]["test_error_std"] == pytest.approx(np.std([0.12, 0.14], ddof=1))
  assert rows["random"]["collapsed_runs"] == 1 and rows["snip"]["collapsed_runs"] == 0
  found = sweep.findings(list(rows.values()))[("d", "lenet300", 3, 0.98)]
  assert found["gap"] == pytest.approx(0.04)
  assert found["vs_random"] == pytest.approx(0.60 - 0.13)


def test_kept_first_layer_counts_shrink_with_sparsity():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(1000, 28, 28, 1)).astype(np.float32)
  labels = np.arange(1000) % 10
  sparsities = (0.5, 0.9, 0.99)
  counts, means = mask_pictures.first_layer_counts(images, labels, sparsities, seed=0)
  assert counts.shape == (11, 3, 28, 28) and means.shape == (11, 28, 28)
  assert counts.min() >= 0 and counts.max() <= 300
  # One score vector per batch: a sparser mask is a subset of a denser one.
  assert (np.diff(counts, axis=1) <= 0).all()
  # Never more first-layer connections than the whole network keeps.
  total = 784 * 300 + 300 * 100 + 100 * 10
  for i, s in enumerate(sparsities):
    assert (counts[:, i].sum(axis=(1, 2)) <= round((1 - s) * total)).all()
  corr = mask_pictures.correlations(counts[:, :1], counts[:, 0].astype(np.float32))
  np.testing.assert_allclose(np.asarray(corr), 1.0)


def test_quick_outputs_never_go_to_results():
  assert "snip_jax_quick" in runs.quick_out("sweep")
  assert not runs.quick_out("sweep").startswith(str(ROOT / "results"))


def test_sweep_runs_add_the_full_budget_check_of_the_headline():
  specs = sweep.make_runs(
    ["fashion_mnist"], ["lenet300", "lenet5"], ["snip", "random"], [0.9, 0.98], seeds=3
  )
  assert len(specs) == 2 * 3 * (1 + 2 * 2) + 3 * 3
  assert specs[0].name == "fashion_mnist/lenet300/dense/0.0/seed0"
  assert specs[0].overrides["num_epochs"] == sweep.BUDGETS["lenet300"]["num_epochs"]
  full = [r for r in specs if "lenet300-full/" in r.name]
  assert {r.tags["criterion"] for r in full} == {"dense", "snip", "random"}
  # The default config's budget: no epoch or decay override.
  assert all(set(r.overrides) <= {"seed", "sparsity", "criterion"} for r in full)
  assert not any(
    "-full/" in r.name
    for r in sweep.make_runs(["d"], ["lenet300"], ["snip"], [0.98], 1, quick=True)
  )


# --------------------------------------------------------------------------------------------
# RESULTS.md's prose: the template and the code that fills it.


def test_fragments_fill_exactly_their_placeholders(tmp_path):
  template = tmp_path / "t.md"
  template.write_text(
    "A comment on the file.\n<!-- fragment: a -->\n$x costs $$${y}.\n\n<!-- fragment: b -->\n"
    " (a clause)\n"
  )
  fill = Fragments(template)
  assert fill("a", x="It", y=3) == "It costs $3."
  assert fill("b") == " (a clause)"  # Leading space kept: a clause appended to a sentence.
  with pytest.raises(ValueError, match=r"fragment 'a': placeholders \['x', 'y'\]"):
    fill("a", x="It")
  with pytest.raises(ValueError, match="values for"):
    fill("b", z=1)
  with pytest.raises(KeyError):
    fill("c")


def test_every_fragment_of_the_results_template_is_filled_by_the_code():
  import re

  code = Path(results_doc.__file__).read_text()
  used = set(re.findall(r'fill\(\s*"(\w+)"', code))
  assert used == set(Fragments(results_doc.TEMPLATE).templates)


def test_crossovers_say_where_sparse_overtakes_dense():
  def crossover(start, below, faster_at):
    return {
      "model": "lenet300",
      "batch_size": 1000,
      "from": start,
      "from_ratio": 0.64 if start else None,
      "below": below,
      "below_ratio": 1.85 if below else None,
      "faster_at": faster_at,
    }

  report = {
    "crossovers": [
      crossover(0.98, 0.95, [0.98, 0.99]),
      crossover(0.5, None, [0.5, 0.9]),
      crossover(None, None, [0.99]),
      crossover(None, 0.99, []),
    ]
  }
  doc = results_doc.Document(ROOT / "results", ROOT)
  assert doc.crossovers(report).splitlines() == [
    "- LeNet-300-100, batch 1,000: sparse is faster from 98.0% on (0.64x the dense time there), "
    "slower at 95.0% (1.85x).",
    "- LeNet-300-100, batch 1,000: sparse is faster from 50.0% on (0.64x the dense time there), "
    "at every sparsity measured.",
    "- LeNet-300-100, batch 1,000: sparse is faster only at 99.0%, not at the highest sparsity "
    "measured.",
    "- LeNet-300-100, batch 1,000: sparse is slower at every sparsity measured (1.85x the dense "
    "time at the highest, 99.0%).",
  ]


def test_numbers_are_written_as_the_configs_write_them():
  assert [results_doc.number(x) for x in (0.1, 1e-3, 5e-4, 0.9, 0.0)] == [
    "0.1",
    "0.001",
    "5e-4",
    "0.9",
    "0",
  ]
  assert [results_doc.percent(s) for s in (0.98, 0.995, 0.1)] == ["98%", "99.5%", "10%"]
  assert results_doc.and_list(["a", "b", "c"]) == "a, b and c"
  assert results_doc.and_list(["a"]) == "a"
  assert [results_doc.seconds(x) for x in (0.7288, 22.344)] == ["0.7", "22"]


def test_scoring_mode_quick_measures_every_pair_and_resumes(quick):
  out = quick / "scoring_mode"
  (record,) = runs.read_records(out, scoring_mode.RECORDS_FILE)
  assert record["sparsity"] == {"0.9": pytest.approx(0.9, abs=1e-5)}
  ious = record["iou"]["0.9"]
  assert set(ious) == {name for name, _, _ in scoring_mode.PAIRS}
  # Every pair differs (no mode or key is ignored) and beats two random masks (0.053).
  assert all(0.1 < iou < 1 for iou in ious.values()), ious
  accuracy = record["test_accuracy"]
  assert set(accuracy) == {"inference 0.9", "batch_stats 0.9", "train 0.9", "dense"}
  assert all(0.2 < a <= 1 for a in accuracy.values()), accuracy  # 10 steps beat chance.
  summary = json.loads((out / "scoring_mode.json").read_text())
  assert summary["seeds"] == [0] and summary["epochs"] == 1
  assert "| inference vs batch_stats |" in scoring_mode.table(summary)
  before = (out / "records.jsonl").read_bytes()
  rerun = finish(start("scoring_mode", "--quick", f"--out={out}"))
  assert "1 of 1 seeds already measured" in rerun
  assert (out / "records.jsonl").read_bytes() == before


def test_the_readme_scoring_mode_block_is_the_committed_results():
  summary = json.loads((ROOT / "results" / "scoring_mode" / "scoring_mode.json").read_text())
  readme = (ROOT / "README.md").read_text()
  block = readme.split("<!-- scoring-mode:start -->\n")[1].split("<!-- scoring-mode:end -->")[0]
  assert block.strip() == scoring_mode.table(summary).strip()
  # The README's claims about it.
  import jax
  import jax.numpy as jnp

  import snip_jax

  variables = scoring_mode.ConvNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  prunable = snip_jax.count_prunable(variables["params"])
  assert f"Dense layers; {prunable:,} prunable weights)" in readme.replace("\n", " ")
  for sparsity, iou in summary["iou"].items():
    mean = {name: stat["mean"] for name, stat in iou.items()}
    two_batches = min(mean["inference, two batches"], mean["batch_stats, two batches"])
    assert mean["train, two dropout keys"] < two_batches  # Dropout moves the mask more.
    assert mean["inference vs batch_stats"] < two_batches  # The modes choose other masks.
    assert min(mean.values()) > 3 * summary["random_iou"][sparsity]  # Yet far from random.
    accuracy = {m: summary["test_accuracy"][f"{m} {sparsity}"] for m in scoring_mode.MODES}
    spread = max(a["mean"] for a in accuracy.values()) - min(a["mean"] for a in accuracy.values())
    assert spread < 2 * max(a["std"] for a in accuracy.values())  # Within the seeds' spread.
  records = runs.read_records(ROOT / "results" / "scoring_mode", scoring_mode.RECORDS_FILE)
  assert (
    scoring_mode.summarise(
      records, {k: summary[k] for k in ("command", "machine", "jax", "epochs")}
    )
    == summary
  )
