"""The benchmark suite: its --quick plumbing end to end, its arithmetic, the committed report,
the report of several machines side by side, and the GPU check's dry run.

No timing is asserted: speed goals live in BENCHMARKS.md, measured side by side, never here.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, gpu_check, report, run
from snip_jax import provenance

pytestmark = pytest.mark.slow  # End to end: skipped by the fast tier (-m "not slow").

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """``python -m benchmarks.run --quick`` once: every section at tiny settings, into a scratch
  results folder (its one machine folder is returned)."""
  out = tmp_path_factory.mktemp("bench") / "this-machine"
  committed = (ROOT / "BENCHMARKS.md").read_bytes()
  result = subprocess.run(
    [sys.executable, "-m", "benchmarks.run", "--quick", f"--out={out}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # --quick never touches the committed report.
  assert (ROOT / "BENCHMARKS.md").read_bytes() == committed
  return out


def check_rows(result):
  """Every row is a ratio with a verdict, a measurement without one, or a skip."""
  assert result["rows"], result["section"]
  for row in result["rows"]:
    if "skipped" in row:
      continue
    assert row["met"] in (True, False, None)
    assert (row["goal"] is None) == (row["met"] is None)
    if "value" in row:
      assert row["value"] and row["goal"] is None, row
      continue
    ratio = row["ratio"]
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], row


def test_quick_run_writes_every_section(quick):
  assert sorted(p.stem for p in quick.glob("*.json")) == sorted(run.SECTIONS)
  for name in run.SECTIONS:
    result = json.loads((quick / f"{name}.json").read_text())
    assert result["section"] == name and result["quick"] is True and result["profile"] == "quick"
    assert result["machine"]["cores"] == os.cpu_count()
    assert result["machine"]["id"] == common.machine_id(result["machine"])
    assert result["machine"]["id"].startswith("cpu-")
    # The commit measured, the same for every section of a run.
    assert re.fullmatch(r"[0-9a-f]{7,}( \+ uncommitted changes)?", result["code"])
    assert result["code"] == provenance.code_version()
    check_rows(result)


def test_quick_run_compares_with_pytorch_when_installed(quick):
  rows = json.loads((quick / "train_step.json").read_text())["rows"]
  torch_rows = [row for row in rows if "PyTorch" in row["name"]]
  assert len(torch_rows) == 1  # LeNet-300-100 in --quick.
  try:
    import torch  # noqa: F401
  except ImportError:
    assert all(row["skipped"] == "PyTorch not installed" for row in torch_rows)
  else:
    assert all("skipped" not in row for row in torch_rows)


def test_quick_selection_is_exact(quick):
  for row in json.loads((quick / "selection.json").read_text())["rows"]:
    assert row["same_mask_as_lax_top_k"] is True


def test_quick_inference_and_training_measure_what_they_say(quick):
  for row in json.loads((quick / "inference.json").read_text())["rows"]:
    assert row["max_abs_logit_diff"] < 1e-4  # The BCOO forward computes the dense one's logits.
    assert row["param_bytes"]["BCOO"] < row["param_bytes"]["dense"]
  steps, loss, sparsity = json.loads((quick / "training.json").read_text())["rows"][:3]
  assert steps["steps"] > 0
  assert loss["finite"] is True and math.isfinite(loss["train_loss"])
  assert sparsity["sparsity"] == pytest.approx(0.95, abs=1e-6)


def test_quick_report_renders_every_section(quick):
  text = (quick.parent / "BENCHMARKS.md").read_text()
  assert "Quick mode: plumbing only" in text
  machine = common.machine()["id"]
  assert f"\n## {machine}\n" in text
  for number, name in enumerate(run.SECTIONS, start=1):
    title = json.loads((quick / f"{name}.json").read_text())["title"]
    assert f"\n### {number}. {title} ({machine})\n" in text
  assert f"goals met on {machine}.**" in text
  assert "steps/s compiled" in text and "BCOO / dense forward" in text
  assert "**No GPU result exists yet**" in text


def test_committed_report_is_rendered_from_committed_results(tmp_path):
  """BENCHMARKS.md is exactly what the committed JSON renders to: never edited by hand."""
  results = ROOT / "benchmarks" / "results"
  rendered = tmp_path / "BENCHMARKS.md"
  subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--render_only",
      f"--results={results}",
      f"--markdown={rendered}",
    ],
    check=True,
    capture_output=True,
    cwd=ROOT,
  )
  assert rendered.read_text() == (ROOT / "BENCHMARKS.md").read_text()
  assert not list(results.glob("*.json")), "results lie in benchmarks/results/<machine id>/"
  folders = run.machine_folders(results)
  assert folders
  for folder in folders:
    for name in [*run.SECTIONS, report.CORE_TESTS]:
      path = folder / f"{name}.json"
      if not path.exists():
        continue
      result = json.loads(path.read_text())
      assert report.machine_of(result) == folder.name, path  # Each file in its machine's folder.
      assert result.get("quick") is not True, path


@pytest.mark.parametrize(
  ("record", "expected"),
  [
    ({"backend": "cpu", "cpu": "AMD EPYC", "cores": 2}, "cpu-amd-epyc-2-cores"),
    ({"backend": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "cores": 2}, "cpu-intel-xeon-2-cores"),
    (
      {"backend": "cpu", "cpu": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cores": 8},
      "cpu-intel-xeon-platinum-8375c-8-cores",
    ),
    (
      {"backend": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 16},
      "cpu-amd-epyc-7b13-16-cores",
    ),
    (
      {"backend": "gpu", "cpu": "AMD EPYC", "cores": 16, "devices": ["cuda:0"]}
      | {"device_kind": "NVIDIA H200"},
      "gpu-nvidia-h200",
    ),
    (
      {"backend": "tpu", "cpu": "x", "cores": 96, "devices": ["t"] * 8, "device_kind": "TPU v4"},
      "tpu-v4-8-devices",
    ),
    # A record from before device_kind was recorded: its first device names it.
    ({"backend": "gpu", "cpu": "x", "cores": 4, "devices": ["NVIDIA A100"]}, "gpu-nvidia-a100"),
  ],
)
def test_machine_id_names_the_kind_of_machine(record, expected):
  assert common.machine_id(record) == expected
  assert common.slug(expected) == expected  # Filesystem-safe: a-z, 0-9 and single dashes.


def test_this_machine_records_its_id():
  machine = common.machine()
  assert machine["id"] == common.machine_id(machine)
  assert machine["device_kind"]


def cpu_machine(cpu: str) -> dict:
  """A synthetic machine record of a 2-core CPU."""
  return {
    "cpu": cpu,
    "cores": 2,
    "system": "Linux 6",
    "python": "3.11.7",
    "backend": "cpu",
    "devices": ["cpu:0"],
    "versions": {"jax": "0.10.2", "torch": None},
  }


def section(machine: dict, rows: list, **fields) -> dict:
  """A synthetic section result measured on ``machine``."""
  return {
    "title": "T",
    "description": "What T measures.",
    "rows": rows,
    "command": "python -m benchmarks.run --sections=t",
    "seconds": 3.0,
    "quick": False,
    "machine": machine,
    **fields,
  }


def ratio(median: float) -> dict:
  return {"median": median, "min": median / 2, "max": median * 2, "n": 3}


def test_two_machines_render_side_by_side_never_mixed():
  amd, intel = cpu_machine("AMD EPYC"), cpu_machine("Intel(R) Xeon(R) Processor")
  results = [
    section(
      intel,
      [common.row("shared", ratio(1.5), 1.03), common.row("intel only", ratio(0.5), 1.0)],
      date="2026-11-30",
      code="abc1234",
    ),
    section(amd, [common.row("shared", ratio(1.0), 1.03), common.row("no goal", ratio(2.0), None)]),
  ]
  text = report.render(results)
  # The machines, in the order of their ids, each with its own verdicts.
  machines = text.split("## Machines\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
  assert machines[2:] == [
    "| cpu-amd-epyc-2-cores | AMD EPYC | 2 | cpu | Python 3.11.7, jax 0.10.2 | not recorded "
    "|  | 1 of 1 |  |",
    "| cpu-intel-xeon-2-cores | Intel(R) Xeon(R) Processor | 2 | cpu | Python 3.11.7, jax 0.10.2 "
    "| `abc1234` | 2026-11-30 | 1 of 2 |  |",
  ]
  # One row per goal, one column per machine; a blank cell where a machine lacks the row.
  goals = text.split("## Goals on each machine\n\n", 1)[1].split("\n\n", 2)[1].splitlines()
  assert goals == [
    "| measurement | goal | cpu-amd-epyc-2-cores | cpu-intel-xeon-2-cores |",
    "|---|---|---|---|",
    "| shared | ≤ 1.03 | 1 met | 1.5 **not met** |",
    "| intel only | ≤ 1 |  | 0.5 met |",
  ]
  # Each machine's sections in full, under its heading, its machine named in each title.
  amd_part = text.split("\n## cpu-amd-epyc-2-cores\n", 1)[1].split("\n## cpu-intel", 1)[0]
  assert "**1 of 1 goals met on cpu-amd-epyc-2-cores.**" in amd_part
  assert "### 1. T (cpu-amd-epyc-2-cores)" in amd_part and "intel only" not in amd_part
  assert "| no goal | 2 (1\u20134) |  | (no goal) |" in amd_part
  intel_part = text.split("\n## cpu-intel-xeon-2-cores\n", 1)[1]
  assert "### 1. T (cpu-intel-xeon-2-cores)" in intel_part and "no goal" not in intel_part
  assert "| shared | 1.5 (0.75\u20133) | ≤ 1.03 | **not met** |" in intel_part
  assert "holds only for the machine that measured it" in text
  assert "**No GPU result exists yet**" in text and "Quick mode" not in text


def test_an_accelerator_gets_its_own_part_and_core_tests():
  gpu = {
    **cpu_machine("AMD EPYC"),
    "backend": "gpu",
    "devices": ["cuda:0"],
    "device_kind": "NVIDIA H200",
  }
  result = section(gpu, [{"name": "torch", "skipped": "synthetic"}])
  tests = {
    "passed": 2,
    "failed": 1,
    "errors": 0,
    "skipped": 0,
    "failures": ["test_x::test_y"],
    "command": "pytest -m 'not slow' tests/test_masks.py",
    "machine": gpu,
  }
  text = report.render([result], [tests])
  assert "No GPU result exists yet" not in text
  assert "Results of gpu-nvidia-h200: made by `bash benchmarks/gpu_check.sh`" in text
  assert "| gpu-nvidia-h200 | NVIDIA H200 (host: AMD EPYC) | 2 | gpu |" in text
  assert "| 0 of 0 | 2 passed, 1 failed, 0 skipped |" in text
  assert "2 passed, 1 failed, 0 skipped; failed: test_x::test_y." in text
  assert "### 1. T (gpu-nvidia-h200)" in text


def test_results_of_two_machines_in_one_folder_are_refused(tmp_path):
  folder = tmp_path / "cpu-amd-epyc-2-cores"
  folder.mkdir()
  for name, cpu in (("train_step", "AMD EPYC"), ("pruning", "Intel(R) Xeon(R) Processor")):
    (folder / f"{name}.json").write_text(json.dumps(section(cpu_machine(cpu), [])))
  with pytest.raises(ValueError, match="one kind of machine per folder"):
    run.load_results(tmp_path)
  (folder / "pruning.json").unlink()
  (tmp_path / "copy").mkdir()
  (tmp_path / "copy" / "train_step.json").write_text((folder / "train_step.json").read_text())
  with pytest.raises(ValueError, match="keep one folder per machine id"):
    run.load_results(tmp_path)


def test_core_tests_summary_from_junit_xml(tmp_path):
  xml = tmp_path / "core.xml"
  xml.write_text(
    '<testsuites><testsuite name="pytest">'
    '<testcase classname="tests.test_a" name="test_ok" time="1.5" />'
    '<testcase classname="tests.test_a" name="test_bad" time="0.5"><failure message="x"/>'
    "</testcase>"
    '<testcase classname="tests.test_b" name="test_skip" time="0"><skipped message="y"/>'
    "</testcase>"
    '<testcase classname="tests.test_b" name="test_err" time="0"><error message="z"/></testcase>'
    '<testcase time="0.000" />'  # The test a time limit interrupted.
    "</testsuite></testsuites>"
  )
  summary = gpu_check.summarise(xml, "pytest x", 150, 124)
  assert {k: summary[k] for k in ("passed", "failed", "errors", "skipped", "seconds")} == {
    "passed": 1,
    "failed": 1,
    "errors": 1,
    "skipped": 1,
    "seconds": 2.0,
  }
  assert summary["failures"] == ["tests.test_a::test_bad", "tests.test_b::test_err"]
  assert summary["stopped_at_time_limit"] is True and summary["jax"]
  assert summary["machine"]["id"] == common.machine()["id"]
  missing = gpu_check.summarise(tmp_path / "none.xml", "pytest x", 150, 1)
  assert missing["report_written"] is False and missing["passed"] == 0


def test_the_fetch_commands_are_documented_and_cover_the_check():
  commands = gpu_check.fetch_commands()
  for document in ("README.md", "BENCHMARKS.md"):
    text = (ROOT / document).read_text()
    assert all(command in text for command in commands), document
    assert "bash benchmarks/gpu_check.sh --wheels wheels" in text, document
  # What the core library, its extras and the core tests import is fetched or in the image.
  wanted = {"ml_collections", "tensorflow-datasets", "array_record", "tensorboardX", "pytest"}
  assert wanted <= set(gpu_check.FETCHED)
  assert all((ROOT / path).exists() for path in gpu_check.CORE_TESTS)


def test_gpu_check_dry_run_writes_the_json_and_renders(tmp_path):
  """``bash benchmarks/gpu_check.sh --dry-run``: its whole plumbing on this CPU at tiny sizes, on
  two of the GPU sections (the quick run above runs every section)."""
  out = tmp_path / "gpu_check"
  chosen = ("selection", "inference")
  result = gpu_check_sh("--dry-run", "--out", str(out), "--sections", "inference,selection")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "nothing to install" in result.stdout or "would install" in result.stdout
  machine = common.machine()["id"]
  folder = out / machine
  check = json.loads((folder / "gpu_check.json").read_text())
  assert check["dry_run"] is True and check["installed"] is False
  assert check["core_tests_returncode"] == check["benchmarks_returncode"] == 0
  tests = json.loads((folder / "core_tests.json").read_text())
  assert tests["passed"] > 0 and tests["failed"] == tests["errors"] == 0
  assert tests["machine"]["id"] == machine
  # Only the chosen sections ran, in the GPU sections' order.
  assert sorted(p.stem for p in folder.glob("*.json")) == sorted(
    ("core_tests", "gpu_check", *chosen)
  )
  for name in chosen:
    result_ = json.loads((folder / f"{name}.json").read_text())
    assert result_["quick"] is True and result_["machine"]["id"] == machine
    check_rows(result_)
  text = (out / "BENCHMARKS.md").read_text()
  part = text.split(f"\n## {machine}\n", 1)[1]
  assert f"Core tests on {machine}" in part and "passed, 0 failed" in part
  for number, name in enumerate(chosen, start=1):
    title = json.loads((folder / f"{name}.json").read_text())["title"]
    assert f"### {number}. {title} ({machine})" in part
  assert "BCOO / dense forward" in part


def test_gpu_check_refuses_an_unknown_section_naming_them(tmp_path):
  result = gpu_check_sh("--dry-run", "--out", str(tmp_path), "--sections=nope")
  assert result.returncode != 0
  assert f"unknown section(s) nope: choose among {','.join(run.GPU_SECTIONS)}." in result.stderr
  assert not list(tmp_path.iterdir())  # Refused before the tests and benchmarks wrote anything,
  assert "what fails to import" not in result.stdout  # and before any install.


def gpu_check_sh(*args: str) -> subprocess.CompletedProcess:
  """``bash benchmarks/gpu_check.sh ARGS`` from the checkout, with this interpreter."""
  return subprocess.run(
    ["bash", "benchmarks/gpu_check.sh", *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, "PYTHON": sys.executable},
    timeout=900,
  )


def test_time_interleaved_alternates_the_order():
  calls = []
  fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
  times = common.time_interleaved(fns, rounds=3, warmup=1)
  assert calls == list("abc") + list("abc") + list("cba") + list("abc")
  assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_stats_and_ratios():
  assert common.stats([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
  assert common.ratio_stats([2.0, 3.0, 8.0], [1.0, 3.0, 2.0]) == {
    "median": 2.0,
    "min": 1.0,
    "max": 4.0,
    "n": 3,
  }
  with pytest.raises(ValueError, match="empty"):
    common.stats([])
  with pytest.raises(ValueError, match="denominators"):
    common.ratio_stats([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
  ("median", "goal", "higher", "met"),
  [
    (1.02, 1.03, False, True),
    (1.04, 1.03, False, False),
    (6.0, 5.0, True, True),
    (4.0, 5.0, True, False),
  ],
)
def test_row_verdict_compares_the_median_with_the_goal(median, goal, higher, met):
  row = common.row(
    "x", {"median": median, "min": 0.5, "max": 9.0, "n": 3}, goal, higher_is_better=higher
  )
  assert row["met"] is met
  assert common.row("x", {"median": median, "min": 0.5, "max": 9.0, "n": 3}, None)["met"] is None


def test_report_shows_verdicts_goals_and_skips():
  ratio = {"median": 1.1, "min": 1.0, "max": 1.3, "n": 5}
  result = {
    "title": "T",
    "description": "Uses ``code`` and :func:`snip_jax.top_k_mask`.",
    "rows": [
      common.row("slow", ratio, 1.03, seconds={"a": {"median": 0.002, "min": 0.001, "max": 0.003}}),
      common.row("fast", ratio, 1.5),
      common.row("bigger", ratio, 5.0, higher_is_better=True),
      common.row("plain", ratio, None),
      {"name": "torch", "skipped": "PyTorch not installed"},
    ],
    "command": "python -m benchmarks.run --sections=t",
    "seconds": 12.0,
    "quick": False,
    "machine": common.machine(),
  }
  text = report.render([result])
  assert f"**1 of 3 goals met on {result['machine']['id']}.**" in text
  assert "| slow | 1.1 (1\u20131.3) | ≤ 1.03 | **not met** | a: 2 ms (1 ms\u20133 ms) |" in text
  assert "| fast | 1.1 (1\u20131.3) | ≤ 1.5 | met |" in text
  assert "| bigger | 1.1 (1\u20131.3) | ≥ 5 | **not met** |" in text
  assert "| plain | 1.1 (1\u20131.3) |  | (no goal) |" in text
  assert "| torch |  |  | not run: PyTorch not installed |" in text
  assert "Uses `code` and `snip_jax.top_k_mask`." in text and "Quick mode" not in text
